package auth

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"unicode/utf8"
)

// FuzzParseACL feeds arbitrary files to ParseACL and, for what parses,
// arbitrary clients and topics to the checks. Besides not crashing or
// hanging, it checks what must always hold: a refusal names its line
// and wraps ErrACLSyntax; a topic the client may read makes MayRead true
// for it; and every topic MayRead offers as proof matches the filter and
// may be read. The seed corpus is in testdata/fuzz/FuzzParseACL.
//
//	go test -run '^$' -fuzz FuzzParseACL ./auth/
func FuzzParseACL(f *testing.F) {
	f.Add([]byte(aclRules), "c2", "alice", "alice/#")
	f.Add([]byte(aclRules), "c5", "dave", "dev/c5/+")
	f.Add([]byte(aclRules), "a+b", "", "public/news")
	f.Add([]byte("topic read\nuser u\ntopic deny a/#\npattern read %u/%c\n"), "c", "u", "u/c")
	f.Add([]byte("topic\tread a\n"), "c", "", "a")
	f.Add([]byte("pattern read $SYS/%c/#\n"), "x", "", "$SYS/x/y")
	f.Fuzz(func(t *testing.T, file []byte, clientID, username, topic string) {
		a, err := ParseACL(bytes.NewReader(file), "fuzz", nil)
		if err != nil {
			if !errors.Is(err, ErrACLSyntax) || !strings.HasPrefix(err.Error(), "fuzz:") {
				t.Fatalf("error without a position or ErrACLSyntax: %v", err)
			}
			return
		}
		// MQTT strings: valid UTF-8 without NUL; client ids and user
		// names come from CONNECT, topics from PUBLISH and SUBSCRIBE.
		for _, s := range []string{clientID, username, topic} {
			if !utf8.ValidString(s) || strings.IndexByte(s, 0) >= 0 {
				return
			}
		}
		for _, id := range []Identity{{ClientID: clientID, Username: username}, {ClientID: clientID, Anonymous: true}} {
			r := a.Rules(id)
			if strings.ContainsAny(topic, "+#") || strings.HasPrefix(topic, sharePrefix) {
				if checkFilter(topic) != nil {
					continue
				}
				if witness, ok := r.readableTopic(topic); ok && witness != "" {
					filter := topic
					if strings.HasPrefix(filter, sharePrefix) {
						parts := strings.SplitN(filter, "/", 3)
						if len(parts) < 3 {
							t.Fatalf("MayRead(%q) offered %q", topic, witness)
						}
						filter = parts[2]
					}
					if !TopicMatches(filter, witness) || !r.Allowed(witness, Read) {
						t.Fatalf("MayRead(%q) offered %q, which does not match or may not be read", topic, witness)
					}
				}
				continue
			}
			read := r.Allowed(topic, Read)
			_ = r.Allowed(topic, Write)
			if read && !r.MayRead(topic) {
				t.Fatalf("%+v may read %q, but MayRead(%q) is false", id, topic, topic)
			}
		}
	})
}
