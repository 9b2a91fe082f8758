package auth

import (
	"sort"
	"strconv"
	"strings"
)

// searchBudget bounds the states MayRead explores for one filter. Real
// ACL files need a few dozen; a file built to make the search explode
// makes MayRead answer true, which is mosquitto's answer anyway (it
// grants every subscription and filters each message).
const searchBudget = 4096

// sharePrefix starts a shared subscription: $share/GROUP/FILTER.
const sharePrefix = "$share/"

// MayRead reports whether a subscription to filter could ever deliver a
// message to the client: whether some topic name matching filter is one
// Allowed lets it read. mosquitto 2.0 grants every SUBSCRIBE and then
// filters each message by read access; a subscription for which MayRead
// is false is one on which mosquitto would never deliver anything. A
// shared subscription ($share/GROUP/FILTER) is judged by its FILTER.
//
// The answer is exact (no topic is tried one by one: the filter is
// intersected with each grant, and the search looks for a topic in that
// intersection that no deny matches), except that a search over its
// budget answers true.
func (r *ClientRules) MayRead(filter string) bool {
	_, ok := r.readableTopic(filter)
	return ok
}

// readableTopic returns a topic name matching filter that the client may
// read, if there is one. When the search runs over its budget it returns
// ("", true): some topic may be readable.
func (r *ClientRules) readableTopic(filter string) (string, bool) {
	if strings.HasPrefix(filter, sharePrefix) {
		rest := filter[len(sharePrefix):]
		i := strings.IndexByte(rest, '/')
		if i < 0 {
			return "", false
		}
		filter = rest[i+1:]
	}
	if filter == "" {
		return "", false
	}
	f := strings.Split(filter, "/")
	s := &coverSearch{budget: searchBudget}
	var userDeny []aclFilter
	if r.own != nil {
		userDeny = r.own.deny
		for _, g := range r.own.allow {
			if t, ok := s.readable(f, g, userDeny); ok {
				return t, true
			}
		}
	}
	if r.hasPatterns && !r.unsafeName && r.patterns != nil {
		deny := append(append([]aclFilter(nil), userDeny...), r.patterns.deny...)
		for _, g := range r.patterns.allow {
			if t, ok := s.readable(f, g, deny); ok {
				return t, true
			}
		}
	}
	return "", false
}

// coverSearch looks for topics in a filter that escape a set of denies.
type coverSearch struct {
	budget int
}

// readable returns a topic matched by both f and the grant g (which must
// grant Read), readable under mosquitto's rule for '$' topics, and matched
// by no filter in deny.
func (s *coverSearch) readable(f []string, g aclRule, deny []aclFilter) (string, bool) {
	if g.access&Read == 0 {
		return "", false
	}
	both, ok := intersect(f, g.filter.levels)
	if !ok {
		return "", false
	}
	// Topics beginning with $share can never be read (SystemTopicAllowed).
	if strings.HasPrefix(both[0], "$share") {
		return "", false
	}
	// A topic beginning with '$' matches no filter beginning with a
	// wildcard, so a deny like "#" cannot cover $SYS topics.
	alive := make([]int, 0, len(deny))
	for i, d := range deny {
		if isDollar(both[0]) && !isDollar(d.levels[0]) {
			continue
		}
		alive = append(alive, i)
	}
	st := &escapeState{s: s, g: both, deny: deny, memo: map[string]bool{}}
	levels, found := st.escape(0, alive, nil)
	if s.budget < 0 {
		return "", true
	}
	if !found {
		return "", false
	}
	return strings.Join(levels, "/"), true
}

// intersect returns a filter matching exactly the topics both p and q
// match, or false if there is none. Where either has a wildcard as its
// first level the result matches no '$' topic, like the filter itself.
func intersect(p, q []string) ([]string, bool) {
	out := make([]string, 0, max(len(p), len(q)))
	for i := 0; ; i++ {
		switch {
		case i < len(p) && p[i] == "#":
			out = append(out, q[i:]...)
		case i < len(q) && q[i] == "#":
			out = append(out, p[i:]...)
		case i == len(p) && i == len(q):
		case i == len(p) || i == len(q):
			return nil, false
		case p[i] == "+":
			out = append(out, q[i])
			continue
		case q[i] == "+" || p[i] == q[i]:
			out = append(out, p[i])
			continue
		default:
			return nil, false
		}
		break
	}
	if len(out) == 0 {
		return nil, false
	}
	if wild := func(l string) bool { return l == "+" || l == "#" }; isDollar(out[0]) && (wild(p[0]) || wild(q[0])) {
		return nil, false
	}
	return out, true
}

// escapeState searches, level by level, for a topic matched by the filter
// g that no deny matches. At each level only the literals of the denies
// still matching can make a difference, plus one "fresh" value equal to
// none of them, so the choices are finite; states are remembered, so each
// is explored once.
type escapeState struct {
	s    *coverSearch
	g    []string
	deny []aclFilter
	memo map[string]bool
}

// escape continues a topic whose first ti levels are chosen (prefix) and
// match g[:gi] — gi stops at a '#' — while the denies in alive match the
// prefix too. It returns the full topic if one escapes every deny. Below
// a '#' of g the topic grows a level at a time and may end as soon as no
// deny is alive, which happens past the longest deny: the depth is
// bounded.
func (e *escapeState) escape(gi int, alive []int, prefix []string) ([]string, bool) {
	ti := len(prefix)
	if e.s.budget--; e.s.budget < 0 {
		return nil, false
	}
	key := e.key(gi, ti, alive)
	if found, seen := e.memo[key]; seen && !found {
		return nil, false
	}
	for _, d := range alive {
		if l := e.deny[d].levels; ti < len(l) && l[ti] == "#" {
			e.memo[key] = false
			return nil, false // every continuation is denied
		}
	}
	// End the topic here, if g allows it and no deny ends here too. A
	// topic has at least one character: a single empty level is no topic.
	if ti > 0 && (ti > 1 || prefix[0] != "") && (gi == len(e.g) || e.g[gi] == "#") {
		ends := false
		for _, d := range alive {
			if len(e.deny[d].levels) == ti {
				ends = true
				break
			}
		}
		if !ends {
			return prefix, true
		}
	}
	if gi == len(e.g) {
		e.memo[key] = false
		return nil, false
	}
	next := gi + 1
	if e.g[gi] == "#" {
		next = gi
	}
	for _, v := range e.choices(gi, ti, alive) {
		var still []int
		for _, d := range alive {
			if l := e.deny[d].levels; ti < len(l) && (l[ti] == "+" || l[ti] == v) {
				still = append(still, d)
			}
		}
		if t, ok := e.escape(next, still, append(prefix[:ti:ti], v)); ok {
			return t, true
		}
		if e.s.budget < 0 {
			return nil, false
		}
	}
	e.memo[key] = false
	return nil, false
}

// choices are the values worth trying for level ti: g's literal, or for a
// wildcard the literals of the alive denies at ti and one fresh value. A
// topic beginning with '$' is outside a filter beginning with a wildcard.
func (e *escapeState) choices(gi, ti int, alive []int) []string {
	if l := e.g[gi]; l != "+" && l != "#" {
		return []string{l}
	}
	seen := map[string]bool{}
	var out []string
	for _, d := range alive {
		l := e.deny[d].levels
		if ti >= len(l) || l[ti] == "+" || l[ti] == "#" || seen[l[ti]] {
			continue
		}
		if ti == 0 && isDollar(l[ti]) {
			continue
		}
		seen[l[ti]] = true
		out = append(out, l[ti])
	}
	sort.Strings(out)
	return append(out, e.fresh(ti, alive))
}

// fresh returns a level value that no alive deny names at level ti and
// that does not begin with '$'.
func (e *escapeState) fresh(ti int, alive []int) string {
	taken := map[string]bool{}
	for _, d := range alive {
		if l := e.deny[d].levels; ti < len(l) {
			taken[l[ti]] = true
		}
	}
	v := "x"
	for n := 0; taken[v]; n++ {
		v = "x" + strconv.Itoa(n)
	}
	return v
}

func (e *escapeState) key(gi, ti int, alive []int) string {
	var b strings.Builder
	b.WriteString(strconv.Itoa(gi))
	b.WriteByte(',')
	b.WriteString(strconv.Itoa(ti))
	for _, d := range alive {
		b.WriteByte(',')
		b.WriteString(strconv.Itoa(d))
	}
	return b.String()
}
