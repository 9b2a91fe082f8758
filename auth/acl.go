package auth

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
)

// Access is a right on a topic: Read (receive what is published there) or
// Write (publish there). A rule may grant both.
type Access uint8

const (
	// Read is the right to receive messages published to a topic.
	Read Access = 1 << iota
	// Write is the right to publish to a topic.
	Write
)

func (a Access) String() string {
	switch a {
	case Read:
		return "read"
	case Write:
		return "write"
	case Read | Write:
		return "readwrite"
	case 0:
		return "deny"
	}
	return fmt.Sprintf("Access(%d)", uint8(a))
}

// ErrACLSyntax is wrapped by every error ParseACL returns for a line it
// cannot read; the message starts with "file:line:".
var ErrACLSyntax = errors.New("ACL file syntax error")

const (
	// maxACLLineLen bounds one line of an ACL file. A rule's filter is at
	// most 65535 bytes (mosquitto's limit), so only a corrupt or hostile
	// file comes near it.
	maxACLLineLen = 1 << 20
	// maxFilterLen is mosquitto's limit for a topic filter, in bytes.
	maxFilterLen = 65535
	// maxFilterSlashes is mosquitto's TOPIC_HIERARCHY_LIMIT: its broker
	// refuses filters with more '/' than this.
	maxFilterSlashes = 200
)

// ACL is a parsed mosquitto ACL file (mosquitto.conf's acl_file). It is
// immutable and safe for concurrent use; Rules gives the view one client
// is checked against.
//
// The file's format and meaning are mosquitto 2.0's:
//
//	# a comment ('#' in the first column)
//	topic [read|write|readwrite|deny] FILTER    rules for anonymous clients
//	user NAME                                   the rules below are NAME's
//	topic [read|write|readwrite|deny] FILTER
//	pattern [read|write|readwrite|deny] FILTER  for every client; %c and %u
//	                                            stand for its client id and user name
//
// Without an access word a rule grants readwrite. Within the rules of a
// user (or of anonymous clients) and within the patterns, a deny that
// matches wins over any grant; the user's rules are consulted before the
// patterns, so a user's grant is not undone by a pattern's deny. A
// topic starting with '$' matches only filters starting with '$'. A
// client whose client id or user name contains '+' or '#' gets no access
// from patterns. Topics beginning with $SYS are read-only whatever the
// file says, and topics beginning with $share can be neither read nor
// written. A client (anonymous or not) whose user has no section gets only
// what the patterns give; everything not granted is denied, so an empty
// file denies everything.
type ACL struct {
	// anonymous holds the rules before the first user line; nil if none.
	anonymous *ruleSet
	users     map[string]*ruleSet
	// patterns is nil when the file has no pattern line.
	patterns *ruleSet
	rules    int
}

// ruleSet is the rules of one section in mosquitto's order: every deny
// before any grant (mosquitto puts deny lines at the front of each list).
type ruleSet struct {
	deny  []aclFilter
	allow []aclRule
}

type aclRule struct {
	filter aclFilter
	access Access
}

// aclFilter is a rule's topic filter, split into levels.
type aclFilter struct {
	text   string
	levels []string
}

func newFilter(text string) aclFilter {
	return aclFilter{text: text, levels: strings.Split(text, "/")}
}

func (s *ruleSet) add(f aclFilter, access Access) {
	if access == 0 {
		s.deny = append(s.deny, f)
		return
	}
	s.allow = append(s.allow, aclRule{filter: f, access: access})
}

// Len returns the number of topic and pattern rules.
func (a *ACL) Len() int {
	if a == nil {
		return 0
	}
	return a.rules
}

// LoadACL reads the ACL file at path; see ParseACL. A nil logger discards
// the warnings.
func LoadACL(path string, logger *slog.Logger) (*ACL, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("load ACL file: %w", err)
	}
	defer f.Close()
	a, err := ParseACL(f, path, logger)
	if err != nil {
		return nil, fmt.Errorf("load ACL file: %w", err)
	}
	return a, nil
}

// ParseACL reads an ACL file from r; name is used in "name:line"
// positions. A line it cannot read is an error (wrapping ErrACLSyntax)
// that names the line and says what is wrong, as mosquitto refuses to
// start with such a file. Lines mosquitto accepts but that probably do not
// mean what their author thinks (a pattern without %c or %u, a rule whose
// only word is an access word) are logged as warnings.
//
// It reads what mosquitto 2.0 reads, the same way: trailing white space is
// ignored; a line whose first byte is '#' is a comment; words are
// separated by spaces (a tab is part of a word, so "topic<TAB>x" is an
// unknown keyword, as in mosquitto); the filter and the user name are the
// rest of the line with the blanks around them removed, and may contain
// spaces (then the access word is required, or the first word of the
// filter is taken for it). Filters must be valid subscription filters of
// at most 65535 bytes and 200 '/'. One deliberate difference: a line
// holding a NUL byte is refused, which mosquitto would cut short there.
func ParseACL(r io.Reader, name string, logger *slog.Logger) (*ACL, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	a := &ACL{users: make(map[string]*ruleSet)}
	var section *ruleSet // the current user's rules; nil before any user line
	var user string
	inUser := false
	br := bufio.NewReader(r)
	var buf []byte
	for lineNo := 1; ; lineNo++ {
		line, tooLong, err := readACLLine(br, buf[:0])
		buf = line
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("read %s:%d: %w", name, lineNo, err)
		}
		at := fmt.Sprintf("%s:%d", name, lineNo)
		if tooLong {
			return nil, fmt.Errorf("%s: line longer than %d bytes: %w", at, maxACLLineLen, ErrACLSyntax)
		}
		text := strings.TrimRight(string(line), cSpace)
		if strings.IndexByte(text, 0) >= 0 {
			return nil, fmt.Errorf("%s: line holds a NUL byte: %w", at, ErrACLSyntax)
		}
		if text == "" || text[0] == '#' {
			continue
		}
		keyword, rest := nextWord(text)
		switch keyword {
		case "":
			continue // only spaces
		case "topic", "pattern":
			access, filter, oneWord, err := parseRule(keyword, rest)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", at, err)
			}
			if _, isAccessWord := accessWords[filter]; oneWord && isAccessWord {
				logger.Warn("ACL file: the rule's only word is an access word, so mosquitto reads it as the filter, granting readwrite",
					"at", at, "filter", filter, "hint", fmt.Sprintf("write \"%s %s FILTER\"", keyword, filter))
			}
			if keyword == "pattern" {
				if !strings.Contains(filter, "%c") && !strings.Contains(filter, "%u") {
					logger.Warn("ACL file: pattern without %c or %u applies to every client alike", "at", at, "pattern", filter)
				}
				if a.patterns == nil {
					a.patterns = &ruleSet{}
				}
				a.patterns.add(aclFilter{text: filter}, access)
			} else {
				if !inUser {
					if a.anonymous == nil {
						a.anonymous = &ruleSet{}
					}
					section = a.anonymous
				}
				section.add(newFilter(filter), access)
			}
			a.rules++
		case "user":
			u := strings.Trim(rest, cSpace)
			if u == "" {
				return nil, fmt.Errorf("%s: user line without a user name: %w", at, ErrACLSyntax)
			}
			user, inUser = u, true
			// mosquitto merges sections of the same user.
			if a.users[user] == nil {
				a.users[user] = &ruleSet{}
			}
			section = a.users[user]
		default:
			hint := ""
			switch {
			case strings.ContainsAny(keyword, "\t\v\f\r"):
				hint = "; separate words with spaces, not tabs (mosquitto reads a tab as part of the word)"
			case strings.HasPrefix(keyword, "#"):
				hint = "; a comment's '#' must be the line's first character (mosquitto refuses indented comments)"
			}
			return nil, fmt.Errorf("%s: unknown keyword %q: want topic, pattern or user%s: %w",
				at, clip(keyword), hint, ErrACLSyntax)
		}
	}
	return a, nil
}

// accessWords maps the access words of a rule to what they grant.
var accessWords = map[string]Access{"read": Read, "write": Write, "readwrite": Read | Write, "deny": 0}

// cSpace is what C's isspace accepts: mosquitto trims it around lines,
// filters and user names.
const cSpace = " \t\n\v\f\r"

// parseRule reads what follows "topic" or "pattern": an optional access
// word and the filter, the way mosquitto's strtok_r calls split it.
// oneWord says the line had a single word after the keyword, which is
// then the filter, whatever it is.
func parseRule(keyword, rest string) (access Access, filter string, oneWord bool, err error) {
	first, after := nextWord(rest)
	if first == "" {
		return 0, "", false, fmt.Errorf("%s line without a topic filter: %w", keyword, ErrACLSyntax)
	}
	access = Read | Write
	if after == "" {
		filter, oneWord = first, true
	} else {
		a, ok := accessWords[first]
		if !ok {
			return 0, "", false, fmt.Errorf("%s line: unknown access %q: want read, write, readwrite or deny (a filter with spaces needs the access word first): %w",
				keyword, clip(first), ErrACLSyntax)
		}
		access = a
		filter = strings.Trim(after, cSpace)
	}
	if err := checkFilter(filter); err != nil {
		return 0, "", false, fmt.Errorf("%s line: invalid topic filter %q: %w: %w", keyword, clip(filter), err, ErrACLSyntax)
	}
	return access, filter, oneWord, nil
}

// nextWord splits s as strtok_r(s, " ") does: leading spaces are skipped
// and the word ends at the next space. rest is what follows that space,
// or "" if the word ends the string.
func nextWord(s string) (word, rest string) {
	s = strings.TrimLeft(s, " ")
	if i := strings.IndexByte(s, ' '); i >= 0 {
		return s[:i], s[i+1:]
	}
	return s, ""
}

// checkFilter applies mosquitto_sub_topic_check (as built into the
// broker): '+' and '#' only as whole levels, '#' only last, at most 65535
// bytes and 200 '/'.
func checkFilter(f string) error {
	if len(f) > maxFilterLen {
		return fmt.Errorf("longer than %d bytes", maxFilterLen)
	}
	if n := strings.Count(f, "/"); n > maxFilterSlashes {
		return fmt.Errorf("%d levels, more than %d", n+1, maxFilterSlashes+1)
	}
	levels := strings.Split(f, "/")
	for i, l := range levels {
		switch {
		case l == "#" && i != len(levels)-1:
			return errors.New("'#' must be the last level")
		case l != "#" && l != "+" && strings.ContainsAny(l, "+#"):
			return errors.New("'+' and '#' must be whole levels")
		}
	}
	return nil
}

// clip shortens text from the file for an error message.
func clip(s string) string {
	if len(s) > 64 {
		return s[:64] + "..."
	}
	return s
}

// readACLLine is readLine with the ACL file's line limit.
func readACLLine(br *bufio.Reader, buf []byte) ([]byte, bool, error) {
	read := false
	tooLong := false
	for {
		chunk, err := br.ReadSlice('\n')
		read = read || len(chunk) > 0
		if !tooLong && len(buf)+len(chunk) <= maxACLLineLen+1 {
			buf = append(buf, chunk...)
		} else {
			tooLong = true
			buf = buf[:0]
		}
		switch {
		case errors.Is(err, bufio.ErrBufferFull):
			continue
		case errors.Is(err, io.EOF):
			if !read {
				return buf, false, io.EOF
			}
			return buf, tooLong, nil
		case err != nil:
			return buf, tooLong, err
		}
		if n := len(buf); n > 0 && buf[n-1] == '\n' {
			buf = buf[:n-1]
		}
		return buf, tooLong, nil
	}
}

// Identity is who an ACL check is for.
type Identity struct {
	ClientID string
	Username string
	// Anonymous is true for a client that sent no user name: it gets the
	// rules before the file's first user line, and patterns with %u do
	// not apply to it.
	Anonymous bool
}

// Rules returns the rules that apply to id: its user's section (the
// anonymous one for an anonymous client) and the patterns with %c and %u
// replaced. Computing them once per client makes each check cheap.
func (a *ACL) Rules(id Identity) *ClientRules {
	r := &ClientRules{}
	if a == nil {
		return r
	}
	if id.Anonymous {
		r.own = a.anonymous
	} else {
		r.own = a.users[id.Username]
	}
	if a.patterns == nil {
		return r
	}
	r.hasPatterns = true
	// Without this, a client could choose an id that turns a pattern into
	// a wildcard (mosquitto CVE-2017-7650).
	if strings.ContainsAny(id.ClientID, "+#") || (!id.Anonymous && strings.ContainsAny(id.Username, "+#")) {
		r.unsafeName = true
		return r
	}
	p := &ruleSet{}
	for _, d := range a.patterns.deny {
		if t, ok := substitute(d.text, id); ok {
			p.deny = append(p.deny, newFilter(t))
		}
	}
	for _, g := range a.patterns.allow {
		if t, ok := substitute(g.filter.text, id); ok {
			p.allow = append(p.allow, aclRule{filter: newFilter(t), access: g.access})
		}
	}
	r.patterns = p
	return r
}

// substitute replaces %c and %u in a pattern the way mosquitto does:
// anywhere in the text, left to right. A pattern with %u does not apply to
// an anonymous client.
func substitute(pattern string, id Identity) (string, bool) {
	if !strings.Contains(pattern, "%") {
		return pattern, true
	}
	if id.Anonymous && strings.Contains(pattern, "%u") {
		return "", false
	}
	var b strings.Builder
	for i := 0; i < len(pattern); i++ {
		if pattern[i] == '%' && i+1 < len(pattern) {
			switch pattern[i+1] {
			case 'c':
				b.WriteString(id.ClientID)
				i++
				continue
			case 'u':
				b.WriteString(id.Username)
				i++
				continue
			}
		}
		b.WriteByte(pattern[i])
	}
	return b.String(), true
}

// ClientRules is the part of an ACL that applies to one client. The zero
// value (and the rules of a nil ACL) deny everything.
type ClientRules struct {
	own         *ruleSet
	patterns    *ruleSet // substituted; nil without patterns or with unsafeName
	hasPatterns bool
	// unsafeName: the client id or user name holds '+' or '#', so the
	// patterns deny it everything the user's own rules do not grant.
	unsafeName bool
}

// UnsafeName reports whether the client gets no access from the file's
// patterns because its client id or user name holds '+' or '#'.
func (r *ClientRules) UnsafeName() bool { return r.hasPatterns && r.unsafeName }

// Allowed reports whether the client may read or write (access) topic, a
// topic name (no wildcards), exactly as mosquitto 2.0 decides with the
// same file.
func (r *ClientRules) Allowed(topic string, access Access) bool {
	if topic == "" || !SystemTopicAllowed(topic, access) {
		return false
	}
	levels := strings.Split(topic, "/")
	if r.own != nil {
		if v, decided := r.own.decide(levels, access); decided {
			return v
		}
	}
	if r.hasPatterns && !r.unsafeName && r.patterns != nil {
		if v, decided := r.patterns.decide(levels, access); decided {
			return v
		}
	}
	return false
}

// decide applies one section to a topic: a matching deny denies, else a
// matching grant of access allows, else the section has no say.
func (s *ruleSet) decide(topic []string, access Access) (allowed, decided bool) {
	for _, d := range s.deny {
		if matchLevels(d.levels, topic) {
			return false, true
		}
	}
	for _, g := range s.allow {
		if g.access&access != 0 && matchLevels(g.filter.levels, topic) {
			return true, true
		}
	}
	return false, false
}

// SystemTopicAllowed applies mosquitto's rule for topics beginning with
// '$', which it checks before any ACL: $SYS topics may be read but not
// written (except $SYS/broker/connection/+/state, which bridges write),
// topics beginning with $share may be neither read nor written, and
// other topics are left to the ACL. Like mosquitto it compares prefixes
// byte for byte, so "$SYSTEM" is a $SYS topic too.
func SystemTopicAllowed(topic string, access Access) bool {
	switch {
	case strings.HasPrefix(topic, "$SYS"):
		return access&Write == 0 || TopicMatches("$SYS/broker/connection/+/state", topic)
	case strings.HasPrefix(topic, "$share"):
		return false
	}
	return true
}

// TopicMatches reports whether topic (a topic name) matches filter, as
// mosquitto matches them: '+' matches one level (possibly empty), '#'
// the rest of the topic including nothing ("a/#" matches "a"), and a topic
// starting with '$' matches only a filter starting with '$'.
func TopicMatches(filter, topic string) bool {
	if filter == "" || topic == "" {
		return false
	}
	return matchLevels(strings.Split(filter, "/"), strings.Split(topic, "/"))
}

// matchLevels is TopicMatches on split filter and topic.
func matchLevels(f, t []string) bool {
	if isDollar(f[0]) != isDollar(t[0]) {
		return false
	}
	for i, l := range f {
		if l == "#" {
			return true
		}
		if i >= len(t) || (l != "+" && l != t[i]) {
			return false
		}
	}
	return len(f) == len(t)
}

func isDollar(level string) bool { return strings.HasPrefix(level, "$") }
