package config

import (
	"bytes"
	"strconv"
	"strings"

	"github.com/pelletier/go-toml/v2/unstable"
)

// entry is one key of a TOML document, where it is written. go-toml's
// errors carry a position but name keys without the index of the array
// table they are in ("broker.listener.kind"), and its decoded values
// carry no position at all; the index gives both: the full key of any
// position, and the position of any key, for errors found after decoding.
type entry struct {
	path  string   // broker.listener[1].kind, device.broker[0]
	parts []string // the same without indexes: broker, listener, kind
	kind  unstable.Kind
	// start is the offset of the key (of the value, for an array
	// element); value and end bound the value. A table header's value is
	// its name.
	start, value, end int
	line, col         int // of the value
	raw               string
	elem              bool // an element of an array value
}

// index is every key of a document, in document order.
type index struct {
	data    []byte
	entries []entry
	byPath  map[string]int
}

// buildIndex walks the document with go-toml's own parser (its unstable
// AST package, pinned with the module version: if it changes, only this
// file does). A syntax error is returned as go-toml reports it.
func buildIndex(data []byte) (*index, error) {
	ix := &index{data: data, byPath: map[string]int{}}
	var p unstable.Parser
	p.Reset(data)
	arrays := map[string]int{} // array-table path → elements so far
	var table []string         // current table, indexed parts
	var plain []string         // current table, plain parts
	for p.NextExpression() {
		e := p.Expression()
		switch e.Kind {
		case unstable.Table, unstable.ArrayTable:
			table, plain = nil, nil
			it := e.Key()
			var first, last *unstable.Node
			for it.Next() {
				k := it.Node()
				if first == nil {
					first = k
				}
				last = k
				name := string(k.Data)
				plain = append(plain, name)
				table = append(table, name)
				joined := strings.Join(table, ".")
				switch {
				case it.IsLast() && e.Kind == unstable.ArrayTable:
					n := arrays[joined]
					arrays[joined] = n + 1
					table[len(table)-1] += "[" + strconv.Itoa(n) + "]"
				case arrays[joined] > 0:
					// A dotted header through an array table names its
					// last element.
					table[len(table)-1] += "[" + strconv.Itoa(arrays[joined]-1) + "]"
				}
			}
			start := int(first.Raw.Offset)
			end := int(last.Raw.Offset + last.Raw.Length)
			ix.add(entry{path: strings.Join(table, "."), parts: clone(plain), kind: e.Kind,
				start: start, value: start, end: end, raw: string(data[start:end])})
		case unstable.KeyValue:
			ix.addKeyValue(table, plain, e)
		}
	}
	if err := p.Error(); err != nil {
		return nil, err
	}
	return ix, nil
}

func clone(s []string) []string { return append([]string(nil), s...) }

// addKeyValue indexes a key-value under table, recursing into arrays and
// inline tables.
func (ix *index) addKeyValue(table, plain []string, kv *unstable.Node) {
	path, parts := clone(table), clone(plain)
	it := kv.Key()
	start := -1
	for it.Next() {
		k := it.Node()
		if start < 0 {
			start = int(k.Raw.Offset)
		}
		path = append(path, string(k.Data))
		parts = append(parts, string(k.Data))
	}
	ix.addValue(path, parts, start, kv.Value(), false)
}

func (ix *index) addValue(path, parts []string, start int, v *unstable.Node, elem bool) {
	vstart, vend := ix.span(v)
	if vstart == 0 && vend == 0 && start >= 0 {
		// An empty array or inline table: [] or {} after the key.
		if i := bytes.IndexAny(ix.data[start:], "[{"); i >= 0 {
			vstart = start + i
			vend = vstart + 1
			if j := bytes.IndexAny(ix.data[vstart:], "]}"); j >= 0 {
				vend = vstart + j + 1
			}
		}
	}
	if start < 0 {
		start = vstart
	}
	ix.add(entry{path: strings.Join(path, "."), parts: parts, kind: v.Kind,
		start: start, value: vstart, end: vend, raw: string(ix.data[vstart:vend]), elem: elem})
	switch v.Kind {
	case unstable.Array:
		i := 0
		for c := v.Children(); c.Next(); i++ {
			elem := clone(path)
			elem[len(elem)-1] += "[" + strconv.Itoa(i) + "]"
			ix.addValue(elem, parts, -1, c.Node(), true)
		}
	case unstable.InlineTable:
		for c := v.Children(); c.Next(); {
			ix.addKeyValue(path, parts, c.Node())
		}
	}
}

// span is where a value is written. Scalars carry their range; arrays and
// inline tables are bounded by their first and last descendants (and the
// brackets around them, found in the text).
func (ix *index) span(v *unstable.Node) (int, int) {
	if v.Raw.Length > 0 {
		return int(v.Raw.Offset), int(v.Raw.Offset + v.Raw.Length)
	}
	start, end := -1, -1
	for c := v.Children(); c.Next(); {
		n := c.Node()
		if n.Kind == unstable.KeyValue {
			if k := n.Key(); k.Next() && (start < 0 || int(k.Node().Raw.Offset) < start) {
				start = int(k.Node().Raw.Offset)
			}
			n = n.Value()
		}
		s, e := ix.span(n)
		if start < 0 || s < start {
			start = s
		}
		if e > end {
			end = e
		}
	}
	open, closer := byte('['), byte(']')
	if v.Kind == unstable.InlineTable {
		open, closer = '{', '}'
	}
	if start < 0 {
		// An empty array or table: nothing to anchor on but the text.
		return 0, 0
	}
	if i := bytes.LastIndexByte(ix.data[:start], open); i >= 0 {
		start = i
	}
	if i := bytes.IndexByte(ix.data[end:], closer); i >= 0 {
		end += i + 1
	}
	return start, end
}

func (ix *index) add(e entry) {
	e.line, e.col = ix.position(e.value)
	ix.byPath[e.path] = len(ix.entries)
	ix.entries = append(ix.entries, e)
}

// position is the 1-based line and byte column of an offset, as go-toml
// reports them.
func (ix *index) position(offset int) (line, col int) {
	before := ix.data[:offset]
	line = bytes.Count(before, []byte("\n")) + 1
	return line, offset - (bytes.LastIndexByte(before, '\n') + 1) + 1
}

// offset is the inverse of position.
func (ix *index) offset(line, col int) int {
	off := 0
	for l := 1; l < line; l++ {
		i := bytes.IndexByte(ix.data[off:], '\n')
		if i < 0 {
			return len(ix.data)
		}
		off += i + 1
	}
	return off + col - 1
}

// at is the innermost key written around the 1-based line and column.
func (ix *index) at(line, col int) (entry, bool) {
	off := ix.offset(line, col)
	best := -1
	for i, e := range ix.entries {
		if e.start <= off && off <= e.end && (best < 0 || e.start >= ix.entries[best].start) {
			best = i
		}
	}
	if best < 0 {
		return entry{}, false
	}
	return ix.entries[best], true
}

// lookup is the entry of a key (with indexes), if the document has it.
func (ix *index) lookup(path string) (entry, bool) {
	if ix == nil {
		return entry{}, false
	}
	i, ok := ix.byPath[path]
	if !ok {
		return entry{}, false
	}
	return ix.entries[i], true
}

// has says whether the document sets the key or anything under it.
func (ix *index) has(path string) bool {
	if ix == nil {
		return false
	}
	for _, e := range ix.entries {
		if e.path == path || strings.HasPrefix(e.path, path+".") || strings.HasPrefix(e.path, path+"[") {
			return true
		}
	}
	return false
}
