package main

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"github.com/pimqtt/pimqtt/cert"
)

// defaultCertDir is where `pimqtt cert` writes unless told otherwise.
const defaultCertDir = "/etc/pimqtt/tls"

const certUsage = `Usage: pimqtt cert [--dir DIR] [--host NAME]... [--ip ADDR]... [--client NAME]...
Makes a local certificate authority (CA) in DIR (ca.crt, ca.key), or reuses
the one already there, and a server certificate signed by it (server.crt,
server.key) for this machine's host name, HOSTNAME.local, localhost,
127.0.0.1, ::1 and its private network addresses, plus the names and
addresses given. Install ca.crt on the phones once; run it again to renew
or extend the server certificate (the CA stays, so the phones need nothing
new). --client makes NAME.crt and NAME.key for listeners that require
client certificates.

`

// certCmd is what the command line of `pimqtt cert` asks for.
type certCmd struct {
	dir     string
	hosts   []string
	ips     []string
	clients []string
}

// runCert is `pimqtt cert`: it makes or reuses the CA and issues the
// certificates, then prints what they are and what to do next.
func runCert(args []string, stdout, stderr io.Writer) int {
	fs := pflag.NewFlagSet("pimqtt cert", pflag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, certUsage, fs.FlagUsages()) }
	var c certCmd
	fs.StringVar(&c.dir, "dir", defaultCertDir, "directory for the CA and the certificates (created if missing)")
	fs.StringSliceVar(&c.hosts, "host", nil, "another host name the server certificate is valid for; repeatable or comma-separated")
	fs.StringSliceVar(&c.ips, "ip", nil, "another IP address the server certificate is valid for; repeatable or comma-separated")
	fs.StringSliceVar(&c.clients, "client", nil, "also make a client certificate NAME.crt/NAME.key; repeatable")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return 0
		}
		fmt.Fprintln(stderr, "pimqtt cert:", err)
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "pimqtt cert: unexpected argument %q\n", fs.Arg(0))
		fs.Usage()
		return 2
	}
	hostname, err := os.Hostname()
	if err != nil {
		// Still useful: localhost and the addresses.
		fmt.Fprintln(stderr, "pimqtt cert: warning: no host name:", err)
	}
	opts, err := c.options(hostname, interfaceAddrs())
	if err != nil {
		fmt.Fprintln(stderr, "pimqtt cert:", err)
		return 2
	}
	res, err := cert.Make(opts)
	if err != nil {
		fmt.Fprintln(stderr, "pimqtt cert:", err)
		return 1
	}
	printCertResult(stdout, res, hostname)
	return 0
}

// options turns the flags into cert.Options: the defaults for hostname
// and the machine's addresses, then the names and addresses asked for.
func (c certCmd) options(hostname string, machineIPs []net.IP) (cert.Options, error) {
	opts := cert.Options{Dir: c.dir, Clients: c.clients}
	opts.DNSNames = append(cert.DefaultDNSNames(hostname), c.hosts...)
	opts.IPs = append([]net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}, machineIPs...)
	for _, s := range c.ips {
		ip := net.ParseIP(strings.TrimSpace(s))
		if ip == nil {
			return cert.Options{}, fmt.Errorf("--ip %q is not an IP address (host names go in --host)", s)
		}
		opts.IPs = append(opts.IPs, ip)
	}
	return opts, nil
}

// interfaceAddrs returns the machine's private network addresses (home
// LAN ranges), the ones phones on the LAN may use to reach it. Public and
// link-local addresses are left out: a public one belongs in --ip only if
// asked for, and a link-local one changes with the interface.
func interfaceAddrs() []net.IP {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return nil
	}
	var out []net.IP
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && n.IP.IsPrivate() {
			out = append(out, n.IP)
		}
	}
	return out
}

// printCertResult says what was made and what to do next, phones included.
func printCertResult(w io.Writer, res *cert.Result, hostname string) {
	caState := "created"
	if res.CAReused {
		caState = "reused"
	}
	names := append([]string(nil), res.DNSNames...)
	for _, ip := range res.IPs {
		names = append(names, ip.String())
	}
	host := "localhost"
	for _, n := range res.DNSNames {
		if strings.HasSuffix(n, ".local") {
			host = n
			break
		}
	}
	date := func(t time.Time) string { return t.Format(time.DateOnly) }
	fmt.Fprintf(w, "CA:      %s (%s), valid until %s\n", res.CA.Cert, caState, date(res.CA.NotAfter))
	fmt.Fprintf(w, "         SHA-256 fingerprint %s\n", res.CAFingerprint)
	fmt.Fprintf(w, "CA key:  %s (keep it secret; only this machine needs it, to issue certificates)\n", res.CA.Key)
	fmt.Fprintf(w, "server:  %s and %s, valid until %s\n", res.Server.Cert, res.Server.Key, date(res.Server.NotAfter))
	fmt.Fprintf(w, "         for %s\n", strings.Join(names, ", "))
	for _, cl := range res.Clients {
		fmt.Fprintf(w, "client:  %s and %s, valid until %s\n", cl.Cert, cl.Key, date(cl.NotAfter))
	}
	fmt.Fprintf(w, `
Next:
1. If pimqtt runs as its own user, let it read the key:
     sudo chown pimqtt: %[1]s
2. Turn TLS on (MQTT over TLS on port 8883, WebSocket over TLS on 8084):
     pimqtt --password-file /etc/pimqtt/passwd --tls-cert %[2]s --tls-key %[1]s
   A running pimqtt serves a renewed certificate after SIGHUP (sudo systemctl reload pimqtt).
3. Check from another machine:
     mosquitto_pub --cafile ca.crt -h %[3]s -p 8883 -u USER -P PASSWORD -t raspberry/led -m 1
4. Phones: copy %[4]s to the phone (never ca.key) and compare the fingerprint above
   with the one the phone shows before trusting it.
   Android: Settings > Security > Encryption & credentials > Install a certificate >
     CA certificate, pick ca.crt. Many Android MQTT apps trust only the CA chosen in their
     own TLS settings: pick ca.crt there too. Browsers (Chrome) use the installed one.
   iOS: open ca.crt (AirDrop, Mail, Files) > Settings > General > VPN & Device Management >
     install the profile; then Settings > General > About > Certificate Trust Settings >
     turn on full trust for %[5]q.
   In the app: host %[3]s, port 8883 with TLS/SSL on (WebSocket: 8084, path /mqtt, wss).
Renew before %[6]s by running the same command again: the CA is reused, so the phones
need nothing new.
`, res.Server.Key, res.Server.Cert, host, res.CA.Cert, res.CAName, date(res.Server.NotAfter))
}
