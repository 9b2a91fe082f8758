package storage

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"os"
)

// bbolt's on-disk format (stable since boltdb): every page starts with a
// 16-byte header (id uint64, flags uint16, count uint16, overflow
// uint32); branch elements are (pos uint32, ksize uint32, pgid uint64),
// leaf elements (flags uint32, pos uint32, ksize uint32, vsize uint32),
// both 16 bytes, pos counted from the element; a bucket is a leaf value
// (root pgid uint64, sequence uint64) followed, when root is 0, by an
// inline page. Little-endian, as on every machine pimqtt builds for.
const (
	pageHeaderSize = 16
	elementSize    = 16
	branchFlag     = 0x01
	leafFlag       = 0x02
	metaFlag       = 0x04
	freelistFlag   = 0x10
	bucketLeafFlag = 0x01
	boltMagic      = 0xED0CDAED
	boltVersion    = 2
	noFreelist     = ^uint64(0)
	maxDepth       = 64
)

// boltMeta is the part of a meta page the check needs.
type boltMeta struct {
	pageSize uint32
	root     uint64
	freelist uint64
	hwm      uint64 // pages in use: ids from 0 to hwm-1
	txid     uint64
}

// parseMeta reads a meta page (b starts with its page header) and checks
// its magic, version and checksum, as bbolt does.
func parseMeta(b []byte) (boltMeta, bool) {
	if len(b) < pageHeaderSize+64 {
		return boltMeta{}, false
	}
	le := binary.LittleEndian
	flags := le.Uint16(b[8:])
	m := b[pageHeaderSize:]
	h := fnv.New64a()
	_, _ = h.Write(m[:56])
	ok := flags == metaFlag && le.Uint32(m[0:]) == boltMagic && le.Uint32(m[4:]) == boltVersion && le.Uint64(m[56:]) == h.Sum64()
	return boltMeta{
		pageSize: le.Uint32(m[8:]),
		root:     le.Uint64(m[16:]),
		freelist: le.Uint64(m[32:]),
		hwm:      le.Uint64(m[40:]),
		txid:     le.Uint64(m[48:]),
	}, ok
}

// checkFile walks a bbolt file's tree the way bbolt's Tx.Check does, but
// in the caller's goroutine and with every offset checked, so that damage
// is an error: bbolt asserts (panics) on a page that is not what it
// expects, and its Check, and its free-page scan at open, run in
// goroutines of their own where a panic kills the process. Checked: a
// valid meta page, pages inside the file, every page reached once, page
// types, elements and keys inside their page, keys in order within their
// parent's range, free pages neither reachable nor out of range. Leaked
// pages (neither reachable nor free) only waste space and are allowed.
func checkFile(f io.ReaderAt, size int64) error {
	var first [4096]byte
	n, _ := f.ReadAt(first[:], 0)
	meta, ok := parseMeta(first[:n])
	var best *boltMeta
	if ok {
		best = &meta
	}
	// The second meta page is one page further; bbolt finds the page
	// size in the first, else tries sizes from 1 KiB.
	for ps := int64(1024); ps <= 1<<24 && ps < size; ps *= 2 {
		if best != nil && ps != int64(best.pageSize) {
			continue
		}
		var second [4096]byte
		n, _ := f.ReadAt(second[:], ps)
		if m, ok := parseMeta(second[:n]); ok && int64(m.pageSize) == ps && (best == nil || m.txid > best.txid) {
			best = &m
			break
		}
	}
	if best == nil {
		return errors.New("no valid meta page")
	}
	c := &checker{f: f, psize: int64(best.pageSize), hwm: best.hwm, seen: map[uint64]bool{0: true, 1: true}}
	switch {
	case c.psize < 1024 || c.psize&(c.psize-1) != 0:
		return fmt.Errorf("page size %d", c.psize)
	case best.hwm < 2 || best.hwm > uint64(size/c.psize):
		return fmt.Errorf("%d pages in use, but the file holds %d", best.hwm, size/c.psize)
	}
	var free []uint64
	if best.freelist != noFreelist {
		var err error
		if free, err = c.freelist(best.freelist); err != nil {
			return err
		}
	}
	if err := c.walk(best.root, nil, nil, 0); err != nil {
		return err
	}
	dup := map[uint64]bool{}
	for _, id := range free {
		switch {
		case id < 2 || id >= c.hwm:
			return fmt.Errorf("free page %d out of range", id)
		case c.seen[id]:
			return fmt.Errorf("page %d both free and in use", id)
		case dup[id]:
			return fmt.Errorf("page %d free twice", id)
		}
		dup[id] = true
	}
	return nil
}

type checker struct {
	f     io.ReaderAt
	psize int64
	hwm   uint64
	seen  map[uint64]bool
}

// page reads page id with its overflow pages, marking them all reached.
func (c *checker) page(id uint64) ([]byte, error) {
	if id < 2 || id >= c.hwm {
		return nil, fmt.Errorf("page %d out of range (%d pages)", id, c.hwm)
	}
	var hdr [pageHeaderSize]byte
	if _, err := c.f.ReadAt(hdr[:], int64(id)*c.psize); err != nil {
		return nil, fmt.Errorf("page %d: %w", id, err)
	}
	le := binary.LittleEndian
	if got := le.Uint64(hdr[:]); got != id {
		return nil, fmt.Errorf("page %d says it is page %d", id, got)
	}
	overflow := uint64(le.Uint32(hdr[12:]))
	if id+overflow >= c.hwm {
		return nil, fmt.Errorf("page %d: %d overflow pages past the end", id, overflow)
	}
	for i := id; i <= id+overflow; i++ {
		if c.seen[i] {
			return nil, fmt.Errorf("page %d reached twice", i)
		}
		c.seen[i] = true
	}
	buf := make([]byte, int64(overflow+1)*c.psize)
	if _, err := c.f.ReadAt(buf, int64(id)*c.psize); err != nil {
		return nil, fmt.Errorf("page %d: %w", id, err)
	}
	return buf, nil
}

// freelist returns the free page ids.
func (c *checker) freelist(id uint64) ([]uint64, error) {
	p, err := c.page(id)
	if err != nil {
		return nil, fmt.Errorf("free list: %w", err)
	}
	le := binary.LittleEndian
	if le.Uint16(p[8:]) != freelistFlag {
		return nil, fmt.Errorf("free list page %d has type %#x", id, le.Uint16(p[8:]))
	}
	start, count := pageHeaderSize, uint64(le.Uint16(p[10:]))
	if count == 0xFFFF {
		count = le.Uint64(p[pageHeaderSize:])
		start += 8
	}
	if count > uint64(len(p)-start)/8 {
		return nil, fmt.Errorf("free list page %d: %d ids do not fit", id, count)
	}
	ids := make([]uint64, count)
	for i := range ids {
		ids[i] = le.Uint64(p[start+8*i:])
	}
	return ids, nil
}

// walk checks the subtree at page id, whose keys are in [lo, hi) (nil:
// unbounded).
func (c *checker) walk(id uint64, lo, hi []byte, depth int) error {
	if depth > maxDepth {
		return fmt.Errorf("page %d: tree deeper than %d", id, maxDepth)
	}
	p, err := c.page(id)
	if err != nil {
		return err
	}
	return c.node(p, id, lo, hi, depth)
}

// node checks a branch or leaf page held in p (a page of the file, or an
// inline bucket's page).
func (c *checker) node(p []byte, id uint64, lo, hi []byte, depth int) error {
	le := binary.LittleEndian
	if len(p) < pageHeaderSize {
		return fmt.Errorf("page %d: shorter than its header", id)
	}
	flags, count := le.Uint16(p[8:]), int(le.Uint16(p[10:]))
	if flags != branchFlag && flags != leafFlag {
		return fmt.Errorf("page %d has type %#x, want a branch or leaf page", id, flags)
	}
	if pageHeaderSize+count*elementSize > len(p) {
		return fmt.Errorf("page %d: %d elements do not fit", id, count)
	}
	// field returns the n bytes at pos from element e, if inside p.
	field := func(e int, pos, n uint64) ([]byte, error) {
		start := uint64(e) + pos
		if start < uint64(e) || start+n < start || start+n > uint64(len(p)) {
			return nil, fmt.Errorf("page %d: element outside its page", id)
		}
		return p[start : start+n], nil
	}
	var prev []byte
	for i := range count {
		e := pageHeaderSize + i*elementSize
		if flags == branchFlag {
			key, err := field(e, uint64(le.Uint32(p[e:])), uint64(le.Uint32(p[e+4:])))
			if err != nil {
				return err
			}
			if err := inOrder(id, key, prev, lo, hi); err != nil {
				return err
			}
			next := hi
			if i+1 < count {
				ne := e + elementSize
				if next, err = field(ne, uint64(le.Uint32(p[ne:])), uint64(le.Uint32(p[ne+4:]))); err != nil {
					return err
				}
			}
			if err := c.walk(le.Uint64(p[e+8:]), key, next, depth+1); err != nil {
				return err
			}
			prev = key
			continue
		}
		pos, ksize, vsize := uint64(le.Uint32(p[e+4:])), uint64(le.Uint32(p[e+8:])), uint64(le.Uint32(p[e+12:]))
		key, err := field(e, pos, ksize)
		if err != nil {
			return err
		}
		value, err := field(e, pos+ksize, vsize)
		if err != nil {
			return err
		}
		if err := inOrder(id, key, prev, lo, hi); err != nil {
			return err
		}
		prev = key
		if le.Uint32(p[e:])&bucketLeafFlag == 0 {
			continue
		}
		if len(value) < 16 {
			return fmt.Errorf("page %d: bucket %q: value of %d bytes", id, key, len(value))
		}
		if root := le.Uint64(value); root != 0 {
			err = c.walk(root, nil, nil, depth+1)
		} else if depth+1 > maxDepth {
			err = fmt.Errorf("page %d: inline buckets nested deeper than %d", id, maxDepth)
		} else {
			err = c.node(value[16:], id, nil, nil, depth+1)
		}
		if err != nil {
			return fmt.Errorf("bucket %q: %w", key, err)
		}
	}
	return nil
}

// inOrder checks that key follows prev and lies in [lo, hi).
func inOrder(id uint64, key, prev, lo, hi []byte) error {
	switch {
	case prev != nil && bytes.Compare(prev, key) >= 0:
		return fmt.Errorf("page %d: keys out of order", id)
	case lo != nil && bytes.Compare(key, lo) < 0:
		return fmt.Errorf("page %d: key below its parent's range", id)
	case hi != nil && bytes.Compare(key, hi) >= 0:
		return fmt.Errorf("page %d: key above its parent's range", id)
	}
	return nil
}

// checkPath runs checkFile on the file at path, if it has content.
func checkPath(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return nil // bbolt's open says what is wrong
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil || fi.Size() == 0 {
		return nil
	}
	if err := checkFile(f, fi.Size()); err != nil {
		return fmt.Errorf("%w: %w", errCorrupt, err)
	}
	return nil
}
