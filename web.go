package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"github.com/pimqtt/pimqtt/auth"
	"github.com/pimqtt/pimqtt/config"
	"github.com/pimqtt/pimqtt/web"
)

// The control page as a part of Main: an MQTT client of the broker (in
// memory in the all-in-one mode, over the network in device-only mode)
// with the password file and ACL of the broker for its users.

// webAccess holds the password and ACL files the page checks, swapped
// whole on reload like the broker's.
type webAccess struct {
	passwords atomic.Pointer[auth.Passwords]
	acl       atomic.Pointer[auth.ACL]
	clientID  string
}

// Check is web.Authenticator over the latest password file.
func (a *webAccess) Check(user, password string) bool {
	return a.passwords.Load().Check(user, password)
}

// CanRead and CanWrite are web.Rights over the latest ACL file: the page
// acts with the signed-in user's rights, as that user would over MQTT.
func (a *webAccess) CanRead(user, topic string) bool { return a.allowed(user, topic, auth.Read) }

func (a *webAccess) CanWrite(user, topic string) bool { return a.allowed(user, topic, auth.Write) }

func (a *webAccess) allowed(user, topic string, access auth.Access) bool {
	acl := a.acl.Load()
	if acl == nil {
		return auth.SystemTopicAllowed(topic, access)
	}
	return acl.Rules(auth.Identity{ClientID: a.clientID, Username: user, Anonymous: user == ""}).Allowed(topic, access)
}

// load reads the files; on error the previous ones stay in force.
func (a *webAccess) load(cfg config.Config, log *slog.Logger) error {
	var pw *auth.Passwords
	var acl *auth.ACL
	var err error
	if cfg.Broker.PasswordFile != "" {
		if pw, err = auth.Load(cfg.Broker.PasswordFile, log); err != nil {
			return cfg.Wrap("broker.password_file", err)
		}
	}
	if cfg.Broker.ACLFile != "" {
		if acl, err = auth.LoadACL(cfg.Broker.ACLFile, log); err != nil {
			return cfg.Wrap("broker.acl_file", err)
		}
	}
	a.passwords.Store(pw)
	a.acl.Store(acl)
	return nil
}

func (m *Main) startWeb(ctx context.Context) (err error) {
	cfg := m.Config
	if len(cfg.HTTP.Listen) == 0 && (len(cfg.HTTP.HTTPSListen) == 0 || cfg.Broker.TLS.CertFile == "") {
		return nil
	}
	log := m.Logger.With("component", "web")
	lns, err := m.webListeners()
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			for _, ln := range lns {
				_ = ln.Close()
			}
		}
	}()
	m.webAccess = &webAccess{clientID: cfg.Device.ClientID + "-web"}
	if err := m.webAccess.load(cfg, log); err != nil {
		return err
	}
	outputs, inputs := m.deviceLines()
	opts := web.Options{
		ClientID:    m.webAccess.clientID,
		StatusTopic: cfg.Device.StatusTopic,
		Title:       cfg.HTTP.Title,
		PageURL:     m.pageURL(lns),
		Logger:      log,
		Rights:      m.webAccess,
	}
	if opts.Title == "" {
		opts.Title, _ = os.Hostname()
	}
	if cfg.Device.TelemetryInterval > 0 {
		opts.TelemetryTopic = cfg.Device.Prefix + "/telemetry"
	}
	if cfg.Broker.PasswordFile == "" {
		// Only loopback addresses are bound then (webListeners).
		opts.Anonymous = true
	} else {
		opts.Auth = m.webAccess
	}
	for _, o := range outputs {
		opts.Outputs = append(opts.Outputs, web.Output{Name: o.Name, CommandTopic: o.CommandTopic, StateTopic: o.StateTopic})
	}
	for _, in := range inputs {
		opts.Inputs = append(opts.Inputs, web.Input{Name: in.Name, StateTopic: in.StateTopic})
	}
	if fi, err := os.Stat(cfg.Device.DataDir); err == nil && fi.IsDir() {
		opts.SessionFile = filepath.Join(cfg.Device.DataDir, "web-sessions.json")
	}
	if m.broker != nil {
		opts.Dial, opts.BrokerLabel = m.broker.DialInMemory, "in-process"
	} else {
		brokers, err := m.netBrokers()
		if err != nil {
			return err
		}
		opts.Dial = web.DialFunc(firstReachable(brokers))
		opts.BrokerLabel = strings.Join(cfg.Device.Brokers, " ")
		opts.Username, opts.Password = cfg.Device.Username, cfg.Device.Password
	}
	if m.web, err = web.New(opts); err != nil {
		return err
	}
	if err = m.web.Start(ctx); err != nil {
		return err
	}
	for _, ln := range lns {
		m.pageAddrs = append(m.pageAddrs, ln.Addr())
		go func() {
			if err := m.web.Serve(ln); err != nil {
				log.Error("control page stopped serving", "addr", ln.Addr().String(), "error", err)
			}
		}()
		log.Info("control page", "addr", ln.Addr().String(), "url", opts.PageURL)
	}
	return nil
}

func (m *Main) closeWeb() error {
	if m.web == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := m.web.Close(ctx)
	m.web, m.pageAddrs = nil, nil
	return err
}

// PageAddrs returns the control page's bound addresses.
func (m *Main) PageAddrs() []net.Addr { return append([]net.Addr(nil), m.pageAddrs...) }

// webListeners binds the page's addresses by the MQTT listeners' rule:
// without a password file the page is anonymous, so it binds loopback
// only, and a network address is an error.
func (m *Main) webListeners() (lns []net.Listener, err error) {
	cfg := m.Config
	defer func() {
		if err != nil {
			for _, ln := range lns {
				_ = ln.Close()
			}
		}
	}()
	var cert *tls.Config
	if cfg.Broker.TLS.CertFile != "" {
		pair, err := tls.LoadX509KeyPair(cfg.Broker.TLS.CertFile, cfg.Broker.TLS.KeyFile)
		if err != nil {
			return nil, cfg.Wrap("broker.tls.cert_file", fmt.Errorf("the control page's certificate: %w", err))
		}
		cert = &tls.Config{Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12}
	}
	bind := func(key, addr string, tlsConfig *tls.Config) error {
		host, port, err := net.SplitHostPort(addr)
		if err != nil {
			return cfg.Wrap(key, err)
		}
		addrs := []string{addr}
		optional := 0 // how many of addrs (from the end) may fail to bind
		if cfg.Broker.PasswordFile == "" {
			switch {
			case host == "":
				addrs, optional = []string{net.JoinHostPort("127.0.0.1", port), net.JoinHostPort("::1", port)}, 1
			case !isLoopback(host):
				return cfg.Wrap(key, fmt.Errorf("the control page on %q would let anyone on the network switch the lines: "+
					"it needs a password file (--password-file, broker.password_file) to sign users in", addr))
			}
		}
		for i, a := range addrs {
			ln, err := net.Listen("tcp", a)
			if err != nil {
				if i >= len(addrs)-optional {
					m.Logger.Warn("control page listener skipped", "addr", a, "error", err)
					continue
				}
				return withPortHint(cfg.Wrap(key, fmt.Errorf("control page: %w", err)))
			}
			if tlsConfig != nil {
				ln = tls.NewListener(ln, tlsConfig)
			}
			lns = append(lns, ln)
		}
		return nil
	}
	for i, a := range cfg.HTTP.Listen {
		if err := bind(fmt.Sprintf("http.listen[%d]", i), a, nil); err != nil {
			return lns, err
		}
	}
	if cert != nil {
		for i, a := range cfg.HTTP.HTTPSListen {
			if err := bind(fmt.Sprintf("http.https_listen[%d]", i), a, cert); err != nil {
				return lns, err
			}
		}
	}
	return lns, nil
}

// pageURL is the page's address as a phone on the LAN reaches it; bound,
// when known, gives the port the kernel picked for ":0".
func (m *Main) pageURL(bound []net.Listener) string {
	cfg := m.Config
	if cfg.HTTP.URL != "" {
		return cfg.HTTP.URL
	}
	if len(cfg.HTTP.Listen) == 0 {
		return ""
	}
	host, port, _ := net.SplitHostPort(cfg.HTTP.Listen[0])
	if len(bound) > 0 {
		_, port, _ = net.SplitHostPort(bound[0].Addr().String())
	}
	if host == "" || net.ParseIP(host) != nil && net.ParseIP(host).IsUnspecified() {
		host = lanAddress()
	}
	if cfg.Broker.PasswordFile == "" && !isLoopback(host) {
		host = "127.0.0.1"
	}
	return "http://" + net.JoinHostPort(host, port) + "/"
}

// lanAddress is the first private IPv4 address of this machine, the one a
// phone on the same Wi-Fi reaches it by; 127.0.0.1 when there is none.
func lanAddress() string {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return "127.0.0.1"
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && n.IP.To4() != nil && n.IP.IsPrivate() {
			return n.IP.String()
		}
	}
	return "127.0.0.1"
}

// joinLines are the addresses a phone should use, for the start-up log
// and pimqtt qr.
func (m *Main) joinLines() []string {
	cfg := m.Config
	host := lanAddress()
	if cfg.Broker.PasswordFile == "" {
		host = "127.0.0.1"
	}
	var out []string
	if cfg.Mode != config.ModeDevice {
		for _, l := range cfg.Broker.Listeners {
			_, port, err := net.SplitHostPort(l.Address)
			if err != nil || port == "0" {
				continue
			}
			scheme, path := map[config.ListenerKind]string{config.KindMQTT: "mqtt", config.KindWS: "ws", config.KindMQTTS: "mqtts", config.KindWSS: "wss"}[l.Kind], ""
			if l.Kind == config.KindWS || l.Kind == config.KindWSS {
				path = "/mqtt"
			}
			out = append(out, scheme+"://"+net.JoinHostPort(host, port)+path)
		}
	}
	if u := m.pageURL(nil); u != "" {
		out = append(out, u)
	}
	return out
}

// errNoPage is returned by pimqtt qr when there is no page.
var errNoPage = errors.New("no control page: http.listen is empty")

// pageQR is the page's address as a QR code for the terminal.
func (m *Main) pageQR() (string, error) {
	u := m.pageURL(nil)
	if u == "" {
		return "", errNoPage
	}
	qr, err := web.QRText(u)
	if err != nil {
		return "", err
	}
	return u + "\n" + qr, nil
}
