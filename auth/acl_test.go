package auth

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func mustParseACL(t testing.TB, text string) *ACL {
	t.Helper()
	a, err := ParseACL(strings.NewReader(text), "acl", nil)
	if err != nil {
		t.Fatalf("ParseACL:\n%s\n: %v", text, err)
	}
	return a
}

func anon(id string) Identity       { return Identity{ClientID: id, Anonymous: true} }
func user(id, name string) Identity { return Identity{ClientID: id, Username: name} }

// TestACLParseErrors: every line mosquitto refuses is an error naming the
// file and line, wrapping ErrACLSyntax.
func TestACLParseErrors(t *testing.T) {
	cases := []struct {
		name, text, want string
	}{
		{"unknown keyword", "topic read a\ntopics read b\n", `acl:2: unknown keyword "topics"`},
		{"keyword case", "Topic a\n", `acl:1: unknown keyword "Topic"`},
		{"tab separates", "topic\tread a\n", "not tabs"},
		{"indented comment", "topic a\n  # note\n", "first character"},
		{"topic alone", "\n\ntopic\n", "acl:3: topic line without a topic filter"},
		{"pattern alone", "pattern   \n", "acl:1: pattern line without a topic filter"},
		{"user alone", "user\n", "acl:1: user line without a user name"},
		{"user blank", "user    \n", "acl:1: user line without a user name"},
		{"bad access", "topic rw a/b\n", `acl:1: topic line: unknown access "rw"`},
		{"spaces need access", "topic my topic\n", `unknown access "my"`},
		{"plus inside level", "topic read a/b+/c\n", "whole levels"},
		{"hash not last", "pattern read #/a\n", "'#' must be the last level"},
		{"hash inside level", "topic a#\n", "whole levels"},
		{"too long", "topic read " + strings.Repeat("a", 65536) + "\n", "longer than 65535 bytes"},
		{"too deep", "topic read " + strings.Repeat("a/", 201) + "a\n", "more than 201"},
		{"NUL", "topic read a\x00b\n", "NUL"},
		{"line over 1 MiB", "topic read " + strings.Repeat(" ", maxACLLineLen) + "a\n", "longer than"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseACL(strings.NewReader(tc.text), "acl", nil)
			if err == nil || !strings.Contains(err.Error(), tc.want) || !errors.Is(err, ErrACLSyntax) {
				t.Fatalf("err = %v, want one containing %q and wrapping ErrACLSyntax", err, tc.want)
			}
		})
	}
}

// TestACLParseAccepted: what mosquitto accepts, read the way it reads it.
func TestACLParseAccepted(t *testing.T) {
	cases := []struct {
		name, text string
		id         Identity
		topic      string
		access     Access
		want       bool
	}{
		{"comment and blank lines", "# c\n\n   \n\t\ntopic read a\n", anon("c"), "a", Read, true},
		{"CRLF", "topic read a\r\nuser u\r\ntopic write b\r\n", user("c", "u"), "b", Write, true},
		{"CRLF user name trimmed", "user u \r\ntopic b\r\n", user("c", "u"), "b", Write, true},
		{"no final newline", "topic read a", anon("c"), "a", Read, true},
		{"leading spaces", "   topic   read   a\n", anon("c"), "a", Read, true},
		{"default readwrite", "topic a\n", anon("c"), "a", Write, true},
		{"filter with spaces", "topic read my topic \n", anon("c"), "my topic", Read, true},
		{"user name with spaces", "user  my user \ntopic a\n", user("c", "my user"), "a", Read, true},
		// mosquitto reads "topic read" as a readwrite rule on the topic "read".
		{"access word alone is the filter", "topic read\n", anon("c"), "read", Write, true},
		{"deny alone is the filter", "topic deny\n", anon("c"), "deny", Write, true},
		{"same user twice merges", "user u\ntopic a\nuser v\ntopic b\nuser u\ntopic c\n", user("x", "u"), "c", Read, true},
		{"trailing tab trimmed", "topic read a\t\n", anon("c"), "a", Read, true},
		{"200 slashes", "topic read " + strings.Repeat("a/", 200) + "a\n", anon("c"), strings.Repeat("a/", 200) + "a", Read, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			a := mustParseACL(t, tc.text)
			if got := a.Rules(tc.id).Allowed(tc.topic, tc.access); got != tc.want {
				t.Fatalf("Allowed(%q, %v) = %v, want %v", tc.topic, tc.access, got, tc.want)
			}
		})
	}
}

// TestACLParseWarnings: lines mosquitto accepts that probably mean
// something else are logged.
func TestACLParseWarnings(t *testing.T) {
	logger, logs := captureLogger()
	if _, err := ParseACL(strings.NewReader("topic read\npattern read all/#\npattern read d/%c\n"), "f", logger); err != nil {
		t.Fatal(err)
	}
	out := logs.String()
	for _, want := range []string{`"at":"f:1"`, "only word is an access word", `"at":"f:2"`, "without %c or %u"} {
		if !strings.Contains(out, want) {
			t.Errorf("log lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "f:3") {
		t.Errorf("a proper pattern was warned about:\n%s", out)
	}
}

// aclRules is the file the rule table below is checked against: every
// rule of mosquitto's it exercises is in it.
const aclRules = `# anonymous clients
topic read public/#
topic deny public/secret
topic read $SYS/broker/uptime

user alice
topic readwrite alice/#
topic deny alice/private/#
topic read shared/#
topic read #
topic write $SYS/x
topic readwrite $share/g/t

user bob
topic write shared/#
topic read bob

user carol

user with space
topic read spaced/#

pattern readwrite dev/%c/#
pattern read users/%u/#
pattern deny dev/%c/locked
pattern read shared/%u
pattern write mix/x%cy/%u
pattern read alice/private/seen
`

// TestACLRules checks mosquitto 2.0's decisions, one rule at a time.
func TestACLRules(t *testing.T) {
	a := mustParseACL(t, aclRules)
	cases := []struct {
		name   string
		id     Identity
		topic  string
		access Access
		want   bool
	}{
		// The anonymous section: rules before the first user line.
		{"anonymous reads public", anon("c1"), "public/news", Read, true},
		{"anonymous cannot write public", anon("c1"), "public/news", Write, false},
		{"anonymous deny wins over the grant", anon("c1"), "public/secret", Read, false},
		{"deny is exact here", anon("c1"), "public/secret/x", Read, true},
		{"a/# matches a", anon("c1"), "public", Read, true},
		{"anonymous gets patterns with %c", anon("c1"), "dev/c1/x", Write, true},
		{"anonymous gets no %u pattern", anon("c1"), "users//x", Read, false},
		{"a user is not anonymous", user("c1", "dave"), "public/news", Read, false},
		// A user's own section.
		{"alice readwrite", user("c2", "alice"), "alice/notes", Write, true},
		{"alice deny before grants", user("c2", "alice"), "alice/private/x", Read, false},
		{"alice deny covers the parent", user("c2", "alice"), "alice/private", Write, false},
		{"alice read-only rule", user("c2", "alice"), "shared/a", Write, false},
		{"alice read #", user("c2", "alice"), "anything/at/all", Read, true},
		// The user's grant is decided before the patterns are looked at,
		// so a pattern's deny does not undo it...
		{"user grant beats pattern deny", user("c2", "alice"), "dev/c2/locked", Read, true},
		// ...and a user's deny is final: the patterns are not consulted.
		{"user deny beats pattern grant", user("c2", "alice"), "alice/private/seen", Read, false},
		// A rule that matches without the right access is skipped.
		{"bob write-only shared", user("c3", "bob"), "shared/a", Read, false},
		{"bob falls through to patterns", user("c3", "bob"), "shared/bob", Read, true},
		{"bob exact topic", user("c3", "bob"), "bob", Read, true},
		{"bob exact is not a prefix", user("c3", "bob"), "bob/x", Read, false},
		{"empty section: patterns only", user("c4", "carol"), "users/carol/x", Read, true},
		{"empty section denies the rest", user("c4", "carol"), "public/news", Read, false},
		{"user without a section", user("c5", "dave"), "users/dave/inbox", Read, true},
		{"user without a section: own dev", user("c5", "dave"), "dev/c5/t", Write, true},
		{"user name with a space", user("c6", "with space"), "spaced/x", Read, true},
		// Patterns and their deny.
		{"pattern deny wins over pattern grant", user("c5", "dave"), "dev/c5/locked", Write, false},
		{"another client's tree", user("c5", "dave"), "dev/c6/t", Write, false},
		{"substituted inside a level", user("cc", "uu"), "mix/xccy/uu", Write, true},
		// '$' topics.
		{"# does not match $SYS", user("c2", "alice"), "$SYS/broker/uptime", Read, false},
		{"$SYS rule grants read", anon("c1"), "$SYS/broker/uptime", Read, true},
		{"$SYS is never writable", user("c2", "alice"), "$SYS/x", Write, false},
		{"$SYSTEM counts as $SYS", user("c2", "alice"), "$SYSTEM", Write, false},
		{"$share never readable", user("c2", "alice"), "$share/g/t", Read, false},
		{"$share never writable", user("c2", "alice"), "$share/g/t", Write, false},
		{"other $ topics: + does not match", user("c5", "dave"), "$dev/c5/t", Write, false},
		// Names with '+' or '#' get nothing from patterns, but keep their
		// own section; '/' is allowed (mosquitto 2.0.11, measured).
		{"client id with +", user("a+b", "dave"), "dev/a+b/t", Write, false},
		{"client id with + loses every pattern", user("a+b", "dave"), "users/dave/x", Read, false},
		{"client id with #", anon("a#"), "dev/a#/t", Write, false},
		{"user name with #", user("c7", "d#"), "dev/c7/t", Write, false},
		{"user name with + keeps own rules", user("c8", "bob"), "bob", Read, true},
		{"client id with / gets patterns", user("a/b", "dave"), "dev/a/b/t", Write, true},
		{"user name with /", user("c9", "x/y"), "users/x/y/z", Read, true},
		{"anonymous + in id", anon("x+"), "public/news", Read, true},
		{"empty topic", anon("c1"), "", Read, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := a.Rules(tc.id).Allowed(tc.topic, tc.access); got != tc.want {
				t.Fatalf("%+v: Allowed(%q, %v) = %v, want %v", tc.id, tc.topic, tc.access, got, tc.want)
			}
		})
	}
	// A user whose name holds '+' keeps its own section.
	b := mustParseACL(t, "user b+\ntopic read x\npattern read p/%u\n")
	if r := b.Rules(user("c", "b+")); !r.Allowed("x", Read) || r.Allowed("p/b+", Read) || !r.UnsafeName() {
		t.Fatal("a user name with '+' should keep its section and lose the patterns")
	}
}

func TestACLEmptyFileDeniesEverything(t *testing.T) {
	for _, text := range []string{"", "# only a comment\n\n"} {
		a := mustParseACL(t, text)
		r := a.Rules(user("c", "u"))
		if r.Allowed("a", Read) || r.Allowed("a", Write) || r.MayRead("#") || a.Len() != 0 {
			t.Fatalf("%q: an empty ACL must deny everything", text)
		}
	}
	var nilACL *ACL
	if nilACL.Rules(anon("c")).Allowed("a", Read) {
		t.Fatal("a nil ACL must deny")
	}
}

func TestTopicMatches(t *testing.T) {
	cases := []struct {
		filter, topic string
		want          bool
	}{
		{"a/b", "a/b", true},
		{"a/+", "a/b", true},
		{"a/+", "a/b/c", false},
		{"a/+", "a/", true},
		{"+/+", "/a", true},
		{"a/#", "a", true},
		{"a/#", "a/b/c", true},
		{"#", "a/b", true},
		{"#", "/", true},
		{"#", "$SYS/x", false},
		{"+/x", "$SYS/x", false},
		{"$SYS/#", "$SYS/x", true},
		{"$SYS/#", "$SYS", true},
		{"a/b", "a/b/", false},
		{"", "a", false},
		{"a", "", false},
	}
	for _, tc := range cases {
		if got := TopicMatches(tc.filter, tc.topic); got != tc.want {
			t.Errorf("TopicMatches(%q, %q) = %v, want %v", tc.filter, tc.topic, got, tc.want)
		}
	}
}

// TestACLMayRead: a SUBSCRIBE is refused exactly where mosquitto, which
// grants it, would never deliver a message on it.
func TestACLMayRead(t *testing.T) {
	a := mustParseACL(t, aclRules)
	cases := []struct {
		name   string
		id     Identity
		filter string
		want   bool
	}{
		{"anonymous public/#", anon("c1"), "public/#", true},
		{"anonymous the denied topic", anon("c1"), "public/secret", false},
		{"anonymous +/secret still matches public/secret/..?", anon("c1"), "+/secret", false},
		{"anonymous # reaches public", anon("c1"), "#", true},
		{"anonymous $SYS/# reaches uptime", anon("c1"), "$SYS/#", true},
		{"anonymous $SYS/other", anon("c1"), "$SYS/other", false},
		{"anonymous other tree", anon("c1"), "private/#", false},
		{"anonymous own dev", anon("c1"), "dev/+/t", true},
		{"alice private/#", user("c2", "alice"), "alice/private/#", false},
		{"alice private/+ also denied", user("c2", "alice"), "alice/private/+", false},
		{"alice # is readable", user("c2", "alice"), "#", true},
		{"alice $SYS not by #", user("c2", "alice"), "$SYS/#", false},
		{"alice shared", user("c2", "alice"), "$share/grp/shared/+", true},
		{"shared sub of a denied filter", user("c2", "alice"), "$share/grp/alice/private/#", false},
		{"bob write-only", user("c3", "bob"), "shared/a", false},
		{"bob pattern under write-only", user("c3", "bob"), "shared/#", true},
		{"bob exact", user("c3", "bob"), "bob", true},
		{"bob below exact", user("c3", "bob"), "bob/#", true}, // bob/# matches bob
		{"bob + below exact", user("c3", "bob"), "bob/+", false},
		{"dave locked", user("c5", "dave"), "dev/c5/locked", false},
		{"dave own dev minus locked", user("c5", "dave"), "dev/c5/+", true},
		{"dave other dev", user("c5", "dave"), "dev/c6/#", false},
		{"unsafe id", user("a+b", "dave"), "dev/#", false},
		{"$share on its own", user("c2", "alice"), "$share/g", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := a.Rules(tc.id)
			witness, got := r.readableTopic(tc.filter)
			if got != tc.want {
				t.Fatalf("MayRead(%q) = %v (witness %q), want %v", tc.filter, got, witness, tc.want)
			}
			if got {
				checkWitness(t, r, tc.filter, witness)
			}
		})
	}
}

// checkWitness fails unless topic matches filter and may be read.
func checkWitness(t *testing.T, r *ClientRules, filter, topic string) {
	t.Helper()
	if strings.HasPrefix(filter, sharePrefix) {
		parts := strings.SplitN(filter, "/", 3)
		filter = parts[2]
	}
	if !TopicMatches(filter, topic) || !r.Allowed(topic, Read) {
		t.Fatalf("witness %q for %q: matches %v, readable %v", topic, filter, TopicMatches(filter, topic), r.Allowed(topic, Read))
	}
}

// TestACLMayReadAgainstBruteForce compares MayRead with an exhaustive
// search over every topic of a small alphabet, on random rule sets and
// filters. The alphabet holds every literal the rules use and values
// equal to none of them ("c", "$c"), so for these rules it stands for
// every possible topic up to its depth.
func TestACLMayReadAgainstBruteForce(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	levels := []string{"a", "b", "", "$SYS", "+", "#"}
	randFilter := func() string {
		n := 1 + rng.IntN(3)
		var parts []string
		for i := 0; i < n; i++ {
			l := levels[rng.IntN(len(levels))]
			if l == "#" && i != n-1 {
				l = "+"
			}
			parts = append(parts, l)
		}
		if f := strings.Join(parts, "/"); f != "" {
			return f
		}
		return "/"
	}
	alphabet := []string{"a", "b", "c", "", "$SYS", "$c"}
	var topics []string
	var grow func(prefix []string)
	grow = func(prefix []string) {
		if len(prefix) > 0 {
			topics = append(topics, strings.Join(prefix, "/"))
		}
		// Filters have at most 3 levels, so a topic escaping every deny
		// needs at most 4.
		if len(prefix) == 4 {
			return
		}
		for _, l := range alphabet {
			if len(prefix) > 0 && l == "$c" {
				continue // a fresh '$' value matters only first
			}
			grow(append(prefix[:len(prefix):len(prefix)], l))
		}
	}
	grow(nil)

	access := []string{"read", "write", "readwrite", "deny", "deny"}
	for round := 0; round < 400; round++ {
		var b strings.Builder
		b.WriteString("user u\n")
		for i := 0; i < 1+rng.IntN(4); i++ {
			fmt.Fprintf(&b, "topic %s %s\n", access[rng.IntN(len(access))], randFilter())
		}
		for i := 0; i < rng.IntN(3); i++ {
			fmt.Fprintf(&b, "pattern %s %s\n", access[rng.IntN(len(access))], randFilter())
		}
		a := mustParseACL(t, b.String())
		r := a.Rules(user("c", "u"))
		for k := 0; k < 10; k++ {
			filter := randFilter()
			witness, got := r.readableTopic(filter)
			want := ""
			for _, topic := range topics {
				if TopicMatches(filter, topic) && r.Allowed(topic, Read) {
					want = topic
					break
				}
			}
			if got != (want != "") {
				t.Fatalf("rules:\n%sMayRead(%q) = %v (witness %q), brute force found %q", b.String(), filter, got, witness, want)
			}
			if got {
				if witness == "" {
					t.Fatalf("rules:\n%sMayRead(%q): true without a witness", b.String(), filter)
				}
				checkWitness(t, r, filter, witness)
			}
		}
	}
}

// TestACLMayReadBudget: rules built to make the search explode make
// MayRead answer true (mosquitto's answer) quickly instead of hanging.
func TestACLMayReadBudget(t *testing.T) {
	var b strings.Builder
	b.WriteString("topic read #\n")
	for i := 0; i < 12; i++ {
		for j := 0; j < 12; j++ {
			parts := make([]string, 12)
			for k := range parts {
				parts[k] = "+"
			}
			parts[i] = fmt.Sprintf("v%d", j)
			fmt.Fprintf(&b, "topic deny %s\n", strings.Join(parts, "/"))
		}
	}
	a := mustParseACL(t, b.String())
	if !a.Rules(anon("c")).MayRead(strings.TrimSuffix(strings.Repeat("+/", 12), "/")) {
		t.Fatal("MayRead should give up and answer true")
	}
}

func TestLoadACL(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "acl")
	if err := os.WriteFile(path, []byte("topic read a\nbogus\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadACL(path, nil); err == nil || !strings.Contains(err.Error(), path+":2:") {
		t.Fatalf("LoadACL: %v, want an error naming %s:2", err, path)
	}
	if _, err := LoadACL(filepath.Join(dir, "missing"), nil); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("LoadACL of a missing file: %v", err)
	}
}
