package config

import (
	"bytes"
	"encoding"
	"errors"
	"fmt"
	"os"
	"reflect"
	"sort"
	"strings"

	"github.com/pelletier/go-toml/v2"
	"github.com/pelletier/go-toml/v2/unstable"
)

// Error is one wrong value, with where it came from: a position in a file,
// a flag, or neither (a default). Load, Resolve and Wrap return them,
// several joined with errors.Join when there are several.
type Error struct {
	// File, Line and Column locate the value in a file (Line and Column
	// are 1-based; Column is 0 when unknown, as in a mosquitto.conf).
	File         string
	Line, Column int
	// Flag is the command-line flag that set the value ("--max-clients").
	Flag string
	// Key is the configuration key: "broker.listener[1].kind"; for a value
	// imported from a mosquitto.conf, the mosquitto key.
	Key string
	// Err says what is wrong and what is expected.
	Err error
}

func (e *Error) Error() string {
	var b strings.Builder
	switch {
	case e.Flag != "":
		b.WriteString(e.Flag)
	case e.File != "" && e.Line > 0 && e.Column > 0:
		fmt.Fprintf(&b, "%s:%d:%d", e.File, e.Line, e.Column)
	case e.File != "" && e.Line > 0:
		fmt.Fprintf(&b, "%s:%d", e.File, e.Line)
	case e.File != "":
		b.WriteString(e.File)
	}
	if e.Flag == "" && e.Key != "" {
		if b.Len() > 0 {
			b.WriteString(": ")
		}
		fmt.Fprintf(&b, "key %q", e.Key)
	}
	if b.Len() > 0 {
		b.WriteString(": ")
	}
	b.WriteString(e.Err.Error())
	return b.String()
}

func (e *Error) Unwrap() error { return e.Err }

// origin is where a value came from.
type origin struct {
	file      string
	line, col int
	flag      string
	name      string // the key in the file, when it is not pimqtt's (a mosquitto key)
}

// origins maps keys ("broker.limits.max_clients", "output[1]") to where
// their values came from; a key not in it is a default. A lookup falls
// back to the key's parents, so "output[1].line" set by an --output flag
// is found under "output[1]".
type origins struct {
	keys    map[string]origin
	notices []Notice
}

func (o *origins) set(key string, or origin) {
	if o.keys == nil {
		o.keys = map[string]origin{}
	}
	o.keys[key] = or
}

// drop forgets key and everything under it.
func (o *origins) drop(key string) {
	for k := range o.keys {
		if k == key || strings.HasPrefix(k, key+".") || strings.HasPrefix(k, key+"[") {
			delete(o.keys, k)
		}
	}
}

// rename moves what is known under from to under to.
func (o *origins) rename(moves map[string]string) {
	if len(moves) == 0 {
		return
	}
	out := map[string]origin{}
	for k, v := range o.keys {
		for from, to := range moves {
			if k == from || strings.HasPrefix(k, from+".") {
				k = to + k[len(from):]
				break
			}
		}
		out[k] = v
	}
	o.keys = out
}

func (o *origins) find(key string) (origin, bool) {
	if o == nil {
		return origin{}, false
	}
	// A parent stands for its keys when it is an element of a list (an
	// --output flag makes all of output[1]) or was set by a flag; a table
	// header does not: a default under it is not written there.
	for k := key; k != ""; k = parentKey(k) {
		if or, ok := o.keys[k]; ok && (k == key || strings.HasSuffix(k, "]") || or.flag != "") {
			return or, true
		}
	}
	return origin{}, false
}

// parentKey is "a.b" for "a.b.c" and "a.b[1]", "" at the top.
func parentKey(k string) string {
	if strings.HasSuffix(k, "]") {
		if i := strings.LastIndexByte(k, '['); i > 0 {
			return k[:i]
		}
	}
	if i := strings.LastIndexByte(k, '.'); i > 0 {
		return k[:i]
	}
	return ""
}

func (o *origins) clone() *origins {
	if o == nil {
		return &origins{}
	}
	c := &origins{keys: make(map[string]origin, len(o.keys)), notices: append([]Notice(nil), o.notices...)}
	for k, v := range o.keys {
		c.keys[k] = v
	}
	return c
}

// Wrap adds to err where the value of key came from: the file position,
// the flag, or the mosquitto.conf line, so that a part that finds a value
// wrong (gpio refusing output[1].line) reports it in the user's terms.
// The result is an *Error.
func (c Config) Wrap(key string, err error) error {
	if err == nil {
		return nil
	}
	e := &Error{Key: key, Err: err}
	if or, ok := c.origins.find(key); ok {
		e.File, e.Line, e.Column, e.Flag = or.file, or.line, or.col, or.flag
		if or.name != "" {
			e.Key = or.name
		}
	}
	return e
}

// Notices are what importing a mosquitto.conf had to say (settings
// pimqtt ignores or maps differently), for the caller to log.
func (c Config) Notices() []Notice {
	if c.origins == nil {
		return nil
	}
	return c.origins.notices
}

// Load reads the TOML file at path over [Default], imports the
// mosquitto.conf it names in mosquitto_config (its [broker] keys win over
// the import), and validates the result. Errors name the file, line,
// column and key, and say what is expected.
func Load(path string) (Config, error) {
	cfg, err := load(Default(), path, "", false)
	if err != nil {
		return Config{}, err
	}
	cfg.addTLSListeners()
	return cfg, cfg.validate()
}

// load is Load over base, with a mosquitto.conf path that overrides the
// file's (mosqSet: --mosquitto-config was given, even as ""), and without
// the validation, which comes after the flags.
func load(base Config, path, mosq string, mosqSet bool) (Config, error) {
	cfg := base.clone()
	var doc *document
	if path != "" {
		data, err := os.ReadFile(path)
		if err != nil {
			return Config{}, fmt.Errorf("config file: %w", err)
		}
		if doc, err = parseDocument(path, data); err != nil {
			return Config{}, err
		}
		if !mosqSet {
			// The file names the mosquitto.conf whose settings lie under
			// its own: a first decode finds it.
			peek := base.clone()
			if err := doc.decode(&peek); err != nil {
				return Config{}, err
			}
			mosq = peek.MosquittoConfig
		}
	}
	if mosq != "" {
		b, notices, err := importMosquitto(mosq, cfg.Broker, &cfg.Storage, &cfg.Bridges, cfg.origins)
		if err != nil {
			return Config{}, err
		}
		cfg.Broker = b
		cfg.origins.notices = notices
	}
	if doc != nil {
		if err := doc.decode(&cfg); err != nil {
			return Config{}, err
		}
		if doc.ix.has("broker.listener") {
			// Listeners from the file are explicit (decoding made new
			// ones, so Default is false), and replace the imported ones.
			cfg.origins.drop("broker.listener")
		}
		for _, e := range doc.ix.entries {
			cfg.origins.set(e.path, origin{file: doc.name, line: e.line, col: e.col})
		}
		cfg.Device.shorthandSet = doc.ix.has("device.topic") || doc.ix.has("device.gpio")
	}
	if mosqSet {
		cfg.MosquittoConfig = mosq
		cfg.origins.set("mosquitto_config", origin{flag: "--mosquitto-config"})
	}
	return cfg, nil
}

// document is a parsed TOML file with its index.
type document struct {
	name string
	data []byte
	ix   *index
}

func parseDocument(name string, data []byte) (*document, error) {
	ix, err := buildIndex(data)
	if err != nil {
		// go-toml's decoder reports the same syntax error with its
		// position.
		var perr *unstable.ParserError
		if errors.As(err, &perr) {
			var v map[string]any
			derr := toml.Unmarshal(data, &v)
			var de *toml.DecodeError
			if errors.As(derr, &de) {
				line, col := de.Position()
				return nil, &Error{File: name, Line: line, Column: col, Err: fmt.Errorf("not valid TOML: %s", strings.TrimPrefix(de.Error(), "toml: "))}
			}
		}
		return nil, &Error{File: name, Err: fmt.Errorf("not valid TOML: %w", err)}
	}
	return &document{name: name, data: data, ix: ix}, nil
}

var textUnmarshaler = reflect.TypeFor[encoding.TextUnmarshaler]()

// decode decodes the document strictly over cfg. Values of the wrong TOML
// type are found first, against the Go types (go-toml would hand an
// integer to a Duration's UnmarshalText without a position, or store it
// in an enumeration unchecked); then go-toml decodes, and its errors get
// the full key and a message in the file's terms.
func (d *document) decode(cfg *Config) error {
	var errs []error
	for _, e := range d.ix.entries {
		t, ok := typeAt(e.parts)
		if !ok {
			// Unknown, reported once: not under an unknown table, nor
			// under a value that is not a table (its type is reported).
			if pt, ok := typeAt(e.parts[:len(e.parts)-1]); ok && isTable(pt) {
				line, col := d.ix.position(e.start)
				errs = append(errs, &Error{File: d.name, Line: line, Column: col, Key: e.path,
					Err: errors.New(unknownKey(e.parts))})
			}
			continue
		}
		if e.elem {
			t = t.Elem()
		}
		if want, ok := wantKind(t, e.kind, e.parts[len(e.parts)-1]); !ok {
			errs = append(errs, &Error{File: d.name, Line: e.line, Column: e.col, Key: e.path,
				Err: fmt.Errorf("%s is %s; want %s", shorten(e.raw), gotKind(e.kind), want)})
		}
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	dec := toml.NewDecoder(bytes.NewReader(d.data))
	dec.DisallowUnknownFields()
	err := dec.Decode(cfg)
	var strict *toml.StrictMissingError
	if errors.As(err, &strict) {
		for i := range strict.Errors {
			errs = append(errs, d.translate(&strict.Errors[i], true))
		}
		return errors.Join(errs...)
	}
	var de *toml.DecodeError
	if errors.As(err, &de) {
		return d.translate(de, false)
	}
	if err != nil {
		return &Error{File: d.name, Err: err}
	}
	return nil
}

// translate puts a go-toml error in the file's terms.
func (d *document) translate(de *toml.DecodeError, unknown bool) error {
	line, col := de.Position()
	e := &Error{File: d.name, Line: line, Column: col, Key: strings.Join(de.Key(), ".")}
	var parts []string
	if en, ok := d.ix.at(line, col); ok {
		e.Key, parts = en.path, en.parts
	}
	msg := strings.TrimPrefix(de.Error(), "toml: ")
	switch {
	case unknown:
		if len(parts) == 0 {
			parts = de.Key()
		}
		e.Err = errors.New(unknownKey(parts))
	case strings.Contains(msg, "cannot be stored in"):
		if t, ok := typeAt(parts); ok {
			msg = "out of range; want " + describe(t, "")
		}
		e.Err = errors.New(msg)
	default:
		e.Err = errors.New(msg)
	}
	return e
}

// unknownKey says that a key is not one of pimqtt's and which are.
func unknownKey(parts []string) string {
	name := parts[len(parts)-1]
	parent, where := reflect.TypeFor[Config](), "at the top level"
	if len(parts) > 1 {
		t, ok := typeAt(parts[:len(parts)-1])
		if !ok {
			return "unknown key"
		}
		parent, where = t, "in ["+strings.Join(parts[:len(parts)-1], ".")+"]"
	}
	if parent.Kind() == reflect.Slice {
		parent = parent.Elem()
	}
	if parent.Kind() != reflect.Struct {
		return "unknown key"
	}
	keys := tomlKeys(parent)
	msg := fmt.Sprintf("unknown key %q %s", name, where)
	if s := closest(name, keys); s != "" {
		msg += fmt.Sprintf(" (did you mean %q?)", s)
	}
	return msg + "; the keys there are " + strings.Join(keys, ", ")
}

// tomlKeys are the TOML keys of a struct type, in order.
func tomlKeys(t reflect.Type) []string {
	var keys []string
	for i := range t.NumField() {
		if name := tomlName(t.Field(i)); name != "" {
			keys = append(keys, name)
		}
	}
	return keys
}

func tomlName(f reflect.StructField) string {
	if !f.IsExported() {
		return ""
	}
	name, _, _ := strings.Cut(f.Tag.Get("toml"), ",")
	if name == "-" {
		return ""
	}
	return name
}

// typeAt is the Go type of the key with these (unindexed) parts: a slice
// type for an array table.
func typeAt(parts []string) (reflect.Type, bool) {
	t := reflect.TypeFor[Config]()
	for _, p := range parts {
		if t.Kind() == reflect.Slice {
			t = t.Elem()
		}
		if t.Kind() != reflect.Struct {
			return nil, false
		}
		found := false
		for i := range t.NumField() {
			if f := t.Field(i); tomlName(f) == p {
				t, found = f.Type, true
				break
			}
		}
		if !found {
			return nil, false
		}
	}
	return t, true
}

// isTable says whether keys can be written under a value of type t.
func isTable(t reflect.Type) bool {
	return t.Kind() == reflect.Struct || t.Kind() == reflect.Slice && t.Elem().Kind() == reflect.Struct
}

// wantKind says whether a TOML value of kind k fits Go type t, and if not
// what t wants.
func wantKind(t reflect.Type, k unstable.Kind, name string) (string, bool) {
	fits := false
	switch {
	case reflect.PointerTo(t).Implements(textUnmarshaler):
		fits = k == unstable.String
	case t.Kind() == reflect.String:
		fits = k == unstable.String
	case t.Kind() == reflect.Bool:
		fits = k == unstable.Bool
	case t.Kind() >= reflect.Int && t.Kind() <= reflect.Uint64:
		fits = k == unstable.Integer
	case t.Kind() == reflect.Slice:
		fits = k == unstable.Array || (t.Elem().Kind() == reflect.Struct && k == unstable.ArrayTable)
	case t.Kind() == reflect.Struct:
		fits = k == unstable.Table || k == unstable.InlineTable
	}
	if fits {
		return "", true
	}
	return describe(t, name), false
}

// describe says in the file's terms what a Go type takes.
func describe(t reflect.Type, name string) string {
	if c, ok := reflect.Zero(t).Interface().(chooser); ok {
		return "one of " + strings.Join(c.choices(), ", ") + " (in quotes)"
	}
	switch {
	case t == reflect.TypeFor[Duration]():
		return `a duration in quotes, e.g. "10s", "500ms" or "24h"`
	case t.Kind() == reflect.String:
		return "a string in quotes"
	case t.Kind() == reflect.Bool:
		return "true or false"
	case t.Kind() >= reflect.Int && t.Kind() <= reflect.Int64:
		bits := t.Bits()
		return fmt.Sprintf("a whole number from %d to %d", -(int64(1) << (bits - 1)), int64(1)<<(bits-1)-1)
	case t.Kind() >= reflect.Uint && t.Kind() <= reflect.Uint64:
		return fmt.Sprintf("a whole number from 0 to %d", uint64(1)<<t.Bits()-1)
	case t.Kind() == reflect.Slice && t.Elem().Kind() == reflect.Struct:
		return fmt.Sprintf("[[%s]] tables", name)
	case t.Kind() == reflect.Slice && t.Elem().Kind() == reflect.String:
		return `a list of strings in quotes, e.g. ["a", "b"]`
	case t.Kind() == reflect.Slice:
		return "a list"
	case t.Kind() == reflect.Struct:
		return fmt.Sprintf("a table ([%s] or %s = { ... })", name, name)
	}
	return t.String()
}

func gotKind(k unstable.Kind) string {
	switch k {
	case unstable.String:
		return "a string"
	case unstable.Integer:
		return "a whole number"
	case unstable.Float:
		return "a number with a fraction"
	case unstable.Bool:
		return "a boolean"
	case unstable.Array:
		return "a list"
	case unstable.Table, unstable.InlineTable:
		return "a table"
	case unstable.ArrayTable:
		return "an array of tables"
	}
	return "a date or time"
}

func shorten(s string) string {
	if len(s) > 40 {
		return s[:37] + "..."
	}
	return s
}

// closest is the key within edit distance 2 of name, if there is one.
func closest(name string, keys []string) string {
	best, bestD := "", 3
	for _, k := range keys {
		if d := distance(name, k); d < bestD {
			best, bestD = k, d
		}
	}
	return best
}

// distance is the Levenshtein distance of two short strings.
func distance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// sortErrors orders *Error values by file position, others last.
func sortErrors(errs []error) {
	sort.SliceStable(errs, func(i, j int) bool {
		var a, b *Error
		if !errors.As(errs[i], &a) || !errors.As(errs[j], &b) {
			return false
		}
		return a.File == b.File && (a.Line < b.Line || a.Line == b.Line && a.Column < b.Column)
	})
}
