package web

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"mime"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

const (
	// maxBodyLen bounds request bodies: a command or a sign-in is a few dozen bytes.
	maxBodyLen = 4 << 10
	// publishTimeout bounds the wait for the broker's PUBACK of a command.
	publishTimeout = 5 * time.Second
	// confirmTimeout is how long POST /api/outputs/NAME waits for the device to report the new
	// state before answering 202.
	confirmTimeout = 3 * time.Second
	// maxLoggedName bounds a user name in the log: people type passwords there.
	maxLoggedName = 64
	// anonymousBy names the author of a change made through a page without sign-in.
	anonymousBy = "page"
)

// contentSecurityPolicy allows the page's own files only: no inline script, nothing from
// elsewhere, no framing.
const contentSecurityPolicy = "default-src 'self'; img-src 'self'; style-src 'self'; script-src 'self'; " +
	"connect-src 'self'; manifest-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"

// principal is who a request acts for.
type principal struct {
	user string
	sess *session // nil for basic authentication and anonymous pages
}

// userChecker is what an Authenticator may also offer: whether a user still exists.
type userChecker interface {
	Has(user string) bool
}

func (s *Server) routes() http.Handler {
	mux := http.NewServeMux()
	for path, a := range s.assets.files {
		if path == "/" {
			path = "/{$}"
		}
		mux.HandleFunc("GET "+path, a.serve)
	}
	for path, icon := range s.assets.icons {
		mux.HandleFunc("GET "+path, func(w http.ResponseWriter, r *http.Request) {
			a, err := icon()
			if err != nil {
				s.log.Error("web: icon", "err", err)
				writeError(w, http.StatusInternalServerError, "the icon could not be drawn")
				return
			}
			a.serve(w, r)
		})
	}
	mux.HandleFunc("POST /api/login", s.login)
	mux.HandleFunc("POST /api/logout", s.authed(s.logout))
	mux.HandleFunc("GET /api/lines", s.authed(s.lines))
	mux.HandleFunc("POST /api/outputs/{name}", s.authed(s.setOutput))
	mux.HandleFunc("GET /api/events", s.authed(s.events))
	mux.HandleFunc("GET /api/telemetry", s.authed(s.telemetry))
	mux.HandleFunc("GET /api/qr.svg", s.authed(s.qr))
	// Anything else under /api/ needs a session too, so unauthenticated callers learn nothing.
	mux.HandleFunc("/api/", s.authed(func(w http.ResponseWriter, _ *http.Request, _ principal) {
		writeError(w, http.StatusNotFound, "no such API endpoint; see the README for /api/lines, /api/outputs/NAME, /api/events, /api/telemetry")
	}))
	return securityHeaders(mux)
}

// securityHeaders adds the headers every response carries.
func securityHeaders(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", contentSecurityPolicy)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Referrer-Policy", "same-origin")
		next.ServeHTTP(w, r)
	})
}

// writeJSON sends v with status.
func writeJSON(w http.ResponseWriter, status int, v any) {
	body, err := json.Marshal(v)
	if err != nil {
		status, body = http.StatusInternalServerError, []byte(`{"error":"internal error"}`)
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = w.Write(append(body, '\n'))
}

// writeError sends {"error": msg} with status.
func writeError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, map[string]string{"error": msg})
}

// remoteIP is the request's peer address without port, the throttle's key.
func remoteIP(r *http.Request) string {
	if ap, err := netip.ParseAddrPort(r.RemoteAddr); err == nil {
		return ap.Addr().Unmap().String()
	}
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// loggedName cuts a user name for the log to maxLoggedName bytes (people type passwords into
// the user field); the log handler quotes and escapes what needs it.
func loggedName(user string) string {
	if len(user) <= maxLoggedName {
		return user
	}
	cut := maxLoggedName
	for cut > 0 && !utf8.RuneStart(user[cut]) {
		cut--
	}
	return user[:cut] + "…"
}

// sameOrigin refuses what a browser sends on behalf of another site: Fetch Metadata says
// cross-site or same-site (another host of the same site), or an Origin header names another
// host. Requests with neither header come from scripts (curl), which a cookie-stealing page
// cannot make. SameSite=Strict on the cookie already keeps it off cross-site requests; this
// covers HTTP basic authentication and older browsers too.
func sameOrigin(r *http.Request) bool {
	switch r.Header.Get("Sec-Fetch-Site") {
	case "", "same-origin", "none":
	default:
		return false
	}
	origin := r.Header.Get("Origin")
	if origin == "" {
		return true
	}
	u, err := url.Parse(origin)
	if err != nil || u.Host == "" {
		return false // includes "null", sent by sandboxed frames and some redirects
	}
	return strings.EqualFold(u.Host, r.Host)
}

// authed wraps a handler that needs a user: from the session cookie, HTTP basic
// authentication (for scripts), or nobody when sign-in is off. Others get 401. State-changing
// methods must also come from the page's own origin.
func (s *Server) authed(h func(http.ResponseWriter, *http.Request, principal)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		p, ok := s.identify(w, r)
		if !ok {
			return
		}
		if r.Method != http.MethodGet && r.Method != http.MethodHead && !sameOrigin(r) {
			s.log.Warn("web: cross-site request refused", "method", r.Method, "path", r.URL.Path,
				"origin", r.Header.Get("Origin"), "remote", remoteIP(r))
			writeError(w, http.StatusForbidden, "cross-site request refused")
			return
		}
		h(w, r, p)
	}
}

// identify finds the request's user, or answers 401 (or 429) itself and returns false.
func (s *Server) identify(w http.ResponseWriter, r *http.Request) (principal, bool) {
	if s.opts.Anonymous {
		return principal{}, true
	}
	if c, err := r.Cookie(cookieName); err == nil {
		if sess, renewed := s.sessions.lookup(c.Value); sess != nil {
			if uc, ok := s.opts.Auth.(userChecker); ok && !uc.Has(sess.user) {
				s.sessions.removeUser(sess.user)
				s.log.Info("web: signed out a user who is no longer in the password file", "user", loggedName(sess.user))
			} else {
				if renewed {
					s.setCookie(w, r, c.Value)
				}
				return principal{user: sess.user, sess: sess}, true
			}
		}
	}
	if user, password, ok := r.BasicAuth(); ok {
		if !s.checkPassword(w, r, user, password) {
			return principal{}, false
		}
		return principal{user: user}, true
	}
	w.Header().Set("WWW-Authenticate", `Session realm="pimqtt"`)
	writeError(w, http.StatusUnauthorized, "sign in first (POST /api/login), or send a user and password with HTTP basic authentication")
	return principal{}, false
}

// checkPassword checks a password under the throttle; on failure it has answered.
func (s *Server) checkPassword(w http.ResponseWriter, r *http.Request, user, password string) bool {
	ip := remoteIP(r)
	if wait, ok := s.throttle.Begin(ip); !ok {
		secs := max(int(math.Ceil(wait.Seconds())), 1)
		w.Header().Set("Retry-After", strconv.Itoa(secs))
		writeError(w, http.StatusTooManyRequests, fmt.Sprintf("too many failed sign-ins from this address; try again in %d s", secs))
		return false
	}
	ok := user != "" && s.opts.Auth.Check(user, password)
	s.throttle.End(ip, user, ok)
	if !ok {
		s.log.Warn("web: sign-in failed", "user", loggedName(user), "remote", ip)
		w.Header().Set("WWW-Authenticate", `Session realm="pimqtt"`)
		writeError(w, http.StatusUnauthorized, "wrong user name or password")
		return false
	}
	return true
}

// setCookie sends the session cookie: HttpOnly, SameSite=Strict, Secure over TLS, living as
// long as the session.
func (s *Server) setCookie(w http.ResponseWriter, r *http.Request, id string) {
	http.SetCookie(w, &http.Cookie{
		Name:     cookieName,
		Value:    id,
		Path:     "/",
		MaxAge:   int(s.opts.SessionLifetime / time.Second),
		HttpOnly: true,
		Secure:   r.TLS != nil,
		SameSite: http.SameSiteStrictMode,
	})
}

// login signs a user in: JSON {"user": ..., "password": ...}, or the same fields form-encoded
// (the page's form posts that way when its script did not load, so a password never ends up in
// a URL).
func (s *Server) login(w http.ResponseWriter, r *http.Request) {
	if !sameOrigin(r) {
		writeError(w, http.StatusForbidden, "cross-site request refused")
		return
	}
	if s.opts.Anonymous {
		writeError(w, http.StatusNotFound, "sign-in is off: this page is open to everyone on this machine")
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, maxBodyLen)
	var creds struct {
		User     string `json:"user"`
		Password string `json:"password"`
	}
	form := false
	if ct, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); ct == "application/x-www-form-urlencoded" {
		if err := r.ParseForm(); err != nil {
			writeError(w, http.StatusBadRequest, "could not read the form: "+err.Error())
			return
		}
		creds.User, creds.Password, form = r.PostForm.Get("user"), r.PostForm.Get("password"), true
	} else if err := json.NewDecoder(r.Body).Decode(&creds); err != nil {
		writeError(w, http.StatusBadRequest, jsonProblem(err)+`; send JSON {"user": "...", "password": "..."}`)
		return
	}
	if creds.User == "" || creds.Password == "" {
		writeError(w, http.StatusBadRequest, "both user and password are required")
		return
	}
	if !s.checkPassword(w, r, creds.User, creds.Password) {
		return
	}
	id, _, err := s.sessions.create(creds.User)
	if err != nil {
		s.log.Error("web: sign-in", "err", err)
		writeError(w, http.StatusInternalServerError, "could not start a session")
		return
	}
	s.setCookie(w, r, id)
	s.log.Info("web: signed in", "user", loggedName(creds.User), "remote", remoteIP(r))
	if form {
		http.Redirect(w, r, "/", http.StatusSeeOther)
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"user": creds.User})
}

// logout ends the request's session.
func (s *Server) logout(w http.ResponseWriter, r *http.Request, p principal) {
	if c, err := r.Cookie(cookieName); err == nil && p.sess != nil {
		s.sessions.remove(c.Value)
		s.log.Info("web: signed out", "user", loggedName(p.user), "remote", remoteIP(r))
	}
	http.SetCookie(w, &http.Cookie{Name: cookieName, Value: "", Path: "/", MaxAge: -1, HttpOnly: true,
		Secure: r.TLS != nil, SameSite: http.SameSiteStrictMode})
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) canRead(user, topic string) bool {
	return s.opts.Rights == nil || s.opts.Rights.CanRead(user, topic)
}

func (s *Server) canWrite(user, topic string) bool {
	return s.opts.Rights == nil || s.opts.Rights.CanWrite(user, topic)
}

// snapshot is what p may see.
func (s *Server) snapshot(r *http.Request, p principal, full bool) Snapshot {
	snap := s.hub.snapshot(p.user, s.canRead, s.canWrite, full)
	snap.Title = s.opts.Title
	snap.URL = s.pageURL(r)
	return snap
}

// lines answers GET /api/lines.
func (s *Server) lines(w http.ResponseWriter, r *http.Request, p principal) {
	writeJSON(w, http.StatusOK, s.snapshot(r, p, false))
}

// setOutput answers POST /api/outputs/{name} with a body {"state": "on" | "off" | "toggle"}. It
// publishes the command and waits a moment for the device to report the new state: 200 with
// the state once it has, 202 when it has not yet (the device may be offline).
func (s *Server) setOutput(w http.ResponseWriter, r *http.Request, p principal) {
	name := r.PathValue("name")
	commandTopic, _, ok := s.hub.outputTopics(name)
	if !ok {
		writeError(w, http.StatusNotFound, fmt.Sprintf("no output called %q", name))
		return
	}
	if !s.canWrite(p.user, commandTopic) {
		writeError(w, http.StatusForbidden, fmt.Sprintf("%s may not switch %s (no write right on %s)", userLabel(p.user), name, commandTopic))
		return
	}
	want, err := readState(w, r)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	// Watch before publishing, so the state message cannot slip by unseen.
	changed, stop := s.hub.watch()
	defer stop()
	current, version, _ := s.hub.output(name)
	level, payload := 0, "0"
	switch {
	case want == "on":
		level, payload = 1, "1"
	case want == "off":
	case current == levelUnknown: // toggle of a state nobody has seen: the device knows it
		level, payload = levelUnknown, "TOGGLE"
	default:
		level, payload = 1-current, strconv.Itoa(1-current)
	}
	by := p.user
	if s.opts.Anonymous {
		by = anonymousBy
	}
	if level != levelUnknown {
		s.hub.expect(name, by, level)
	}
	ctx, cancel := context.WithTimeout(r.Context(), publishTimeout)
	defer cancel()
	if err := s.link.publish(ctx, commandTopic, payload); err != nil {
		s.log.Warn("web: command not sent", "output", name, "user", loggedName(p.user), "err", err)
		if errors.Is(err, errNotConnected) {
			writeError(w, http.StatusServiceUnavailable, "pimqtt has no connection to the broker right now; try again shortly")
			return
		}
		writeError(w, http.StatusServiceUnavailable, "the broker did not take the command: "+err.Error())
		return
	}
	s.log.Info("web: output switched", "output", name, "state", want, "user", loggedName(p.user), "remote", remoteIP(r))
	if level != levelUnknown && level == current {
		writeJSON(w, http.StatusOK, map[string]string{"name": name, "state": levelName(level)})
		return
	}
	timer := time.NewTimer(confirmTimeout)
	defer timer.Stop()
	for {
		now, v, _ := s.hub.output(name)
		if v != version && (level == levelUnknown || now == level) {
			writeJSON(w, http.StatusOK, map[string]string{"name": name, "state": levelName(now)})
			return
		}
		select {
		case <-changed:
		case <-timer.C:
			writeJSON(w, http.StatusAccepted, map[string]any{"name": name, "state": levelName(now), "pending": true,
				"message": "command sent; the device has not reported the new state yet"})
			return
		case <-r.Context().Done():
			return
		}
	}
}

// readState reads {"state": "on" | "off" | "toggle"} (any case) from the request body. Its
// errors say what was wrong, then what to send.
func readState(w http.ResponseWriter, r *http.Request) (string, error) {
	const want = `send JSON {"state": "on"}, {"state": "off"} or {"state": "toggle"}`
	var body struct {
		State *string `json:"state"`
	}
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBodyLen))
	if err := dec.Decode(&body); err != nil {
		return "", fmt.Errorf("%s; %s", jsonProblem(err), want)
	}
	if dec.More() {
		return "", fmt.Errorf("more than one JSON value in the body; %s", want)
	}
	if body.State == nil {
		return "", fmt.Errorf(`the body has no "state"; %s`, want)
	}
	st := strings.ToLower(strings.TrimSpace(*body.State))
	switch st {
	case "on", "off", "toggle":
		return st, nil
	}
	return "", fmt.Errorf(`"state" is %q; %s`, *body.State, want)
}

// jsonProblem says what was wrong with a JSON body, in words for the API's user.
func jsonProblem(err error) string {
	var tooBig *http.MaxBytesError
	var syntax *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.Is(err, io.EOF):
		return "the body is empty"
	case errors.As(err, &tooBig):
		return fmt.Sprintf("the body is longer than %d bytes", tooBig.Limit)
	case errors.As(err, &syntax), errors.Is(err, io.ErrUnexpectedEOF):
		return "the body is not valid JSON"
	case errors.As(err, &typ):
		return fmt.Sprintf("%q must be a %s, not a JSON %s", typ.Field, typ.Type, typ.Value)
	}
	return err.Error()
}

// userLabel names a user in messages.
func userLabel(user string) string {
	if user == "" {
		return "an anonymous user"
	}
	return "user " + strconv.Quote(user)
}

// telemetry answers GET /api/telemetry with the last telemetry document as published.
func (s *Server) telemetry(w http.ResponseWriter, _ *http.Request, p principal) {
	topic := s.opts.TelemetryTopic
	switch {
	case topic == "":
		writeError(w, http.StatusNotFound, "this pimqtt has no telemetry topic")
		return
	case !s.canRead(p.user, topic):
		writeError(w, http.StatusForbidden, fmt.Sprintf("%s may not read %s", userLabel(p.user), topic))
		return
	}
	doc, at := s.hub.telemetryDoc()
	if doc == nil {
		writeError(w, http.StatusNotFound, "no telemetry received yet on "+topic)
		return
	}
	w.Header().Set("Last-Modified", at.UTC().Format(http.TimeFormat))
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_, _ = w.Write(append(append([]byte(nil), doc...), '\n'))
}

// qr answers GET /api/qr.svg: the QR code of the page's address.
func (s *Server) qr(w http.ResponseWriter, r *http.Request, _ principal) {
	svg, err := qrSVG(s.pageURL(r))
	if err != nil {
		writeError(w, http.StatusInternalServerError, err.Error())
		return
	}
	w.Header().Set("Content-Type", "image/svg+xml")
	w.Header().Set("Cache-Control", "private, no-cache")
	_, _ = w.Write(svg)
}

// pageURL is the address another phone should open: the one this browser used, unless that is
// a loopback address, which means nothing on another phone; then Options.PageURL, if set.
func (s *Server) pageURL(r *http.Request) string {
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	host := r.Host
	hostname := host
	if h, _, err := net.SplitHostPort(host); err == nil {
		hostname = h
	}
	loopback := strings.EqualFold(hostname, "localhost")
	if ip, err := netip.ParseAddr(strings.Trim(hostname, "[]")); err == nil && ip.IsLoopback() {
		loopback = true
	}
	if (host == "" || loopback) && s.opts.PageURL != "" {
		return s.opts.PageURL
	}
	return scheme + "://" + host + "/"
}
