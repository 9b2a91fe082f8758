// Package cert makes what a household needs to turn TLS on in one step: a
// local certificate authority (CA) that phones and other clients are told
// to trust once, and a server certificate signed by it for the Pi's names
// and addresses. Running it again reuses the CA, so a renewed or extended
// server certificate needs nothing new on the phones.
//
// Keys are ECDSA P-256, which every TLS stack pimqtt's clients use
// accepts (Android, iOS, OpenSSL in mosquitto's clients, Python). The CA
// is limited by name constraints to the names and addresses of a home
// network, so that a phone trusting it cannot be fooled about any other
// site, even by someone who stole the CA's key.
package cert

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"
)

// File names inside Options.Dir.
const (
	CACertFile     = "ca.crt"
	CAKeyFile      = "ca.key"
	ServerCertFile = "server.crt"
	ServerKeyFile  = "server.key"
)

// Validity periods.
const (
	// CAValidity is how long a new CA is valid: ten years, so phones that
	// trust it need no attention in the life of a Pi.
	CAValidity = 10 * 365 * 24 * time.Hour
	// LeafValidity is how long server and client certificates are valid.
	// iOS and macOS refuse TLS server certificates valid for more than 825
	// days, whoever signed them.
	LeafValidity = 820 * 24 * time.Hour
	// backdate covers clients whose clock is a little behind the Pi's.
	backdate = time.Hour
)

// Options says what to make.
type Options struct {
	// Dir holds the CA and the certificates; it is created if missing.
	Dir string
	// DNSNames are the host names the server certificate is valid for;
	// the first one is also its common name. At least one name or address
	// is required.
	DNSNames []string
	// IPs are the addresses the server certificate is valid for.
	IPs []net.IP
	// Clients names client certificates to make besides the server's, for
	// listeners that require one: NAME.crt and NAME.key in Dir.
	Clients []string
	// Now is the time certificates start from; zero means time.Now().
	Now time.Time
}

// Files are a certificate and its key, as paths.
type Files struct {
	Cert, Key string
	// NotAfter is when the certificate expires.
	NotAfter time.Time
}

// Result is what Make wrote and reused.
type Result struct {
	// CA is the CA's certificate and key; CA.Cert is the file clients are
	// given.
	CA Files
	// CAReused is true when the CA was already in Dir.
	CAReused bool
	// CAFingerprint is the SHA-256 fingerprint of the CA certificate, as
	// phones show it before installing (hex pairs joined by ':'), so a
	// copy that was swapped on the way can be spotted.
	CAFingerprint string
	// CAName is the CA's common name, the name phones list it under.
	CAName string
	// Server is the server certificate and key.
	Server Files
	// DNSNames and IPs are those the server certificate is valid for.
	DNSNames []string
	IPs      []net.IP
	// Clients are the client certificates made, in Options.Clients' order.
	Clients []Files
}

// DefaultDNSNames returns the names a Pi called hostname is reached by on a
// home network: its bare name, its mDNS name HOSTNAME.local and localhost.
func DefaultDNSNames(hostname string) []string {
	h := strings.ToLower(strings.TrimSuffix(hostname, "."))
	h = strings.TrimSuffix(h, ".local")
	var names []string
	if h != "" && h != "localhost" {
		names = append(names, h, h+".local")
	}
	return append(names, "localhost")
}

// clientName is what a client certificate's name may be: it becomes a
// file name in Dir.
var clientName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

// Make reuses the CA in opts.Dir or creates one, then issues a new server
// certificate (and the client certificates asked for), replacing the
// previous ones. Keys are written with mode 0600, certificates 0644; each
// file is replaced atomically, so a broker reloading at the same moment
// reads either the old file or the new one. Nothing is written when an
// input is invalid or the existing CA cannot sign for the names asked.
func Make(opts Options) (*Result, error) {
	now := opts.Now
	if now.IsZero() {
		now = time.Now()
	}
	dnsNames, ips, err := normalizeNames(opts.DNSNames, opts.IPs)
	if err != nil {
		return nil, err
	}
	for _, c := range opts.Clients {
		if !clientName.MatchString(c) || c == "ca" || c == "server" {
			return nil, fmt.Errorf("cert: client name %q: use 1-64 letters, digits, '.', '_' or '-' (not \"ca\" or \"server\"); it names the files NAME.crt and NAME.key", c)
		}
	}
	if opts.Dir == "" {
		return nil, errors.New("cert: no directory given")
	}
	if err := os.MkdirAll(opts.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("cert: make directory: %w", err)
	}
	res := &Result{
		CA:       Files{Cert: filepath.Join(opts.Dir, CACertFile), Key: filepath.Join(opts.Dir, CAKeyFile)},
		Server:   Files{Cert: filepath.Join(opts.Dir, ServerCertFile), Key: filepath.Join(opts.Dir, ServerKeyFile)},
		DNSNames: dnsNames,
		IPs:      ips,
	}

	ca, caKey, err := loadCA(res.CA, now)
	switch {
	case err == nil:
		res.CAReused = true
	case errors.Is(err, errNoCA):
		if ca, caKey, err = newCA(dnsNames, ips, now); err != nil {
			return nil, err
		}
	default:
		return nil, err
	}
	res.CA.NotAfter = ca.NotAfter
	res.CAFingerprint = Fingerprint(ca)
	res.CAName = ca.Subject.CommonName

	// Every certificate is made and checked before any file is written.
	type pending struct {
		files Files
		der   []byte
		key   *ecdsa.PrivateKey
	}
	var out []pending
	serverTmpl := &x509.Certificate{
		Subject:     pkix.Name{Organization: []string{"pimqtt"}, CommonName: commonName(dnsNames, ips)},
		DNSNames:    dnsNames,
		IPAddresses: ips,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, key, err := issue(serverTmpl, ca, caKey, now)
	if err != nil {
		return nil, err
	}
	if err := checkServer(der, ca, dnsNames, ips, now); err != nil {
		return nil, err
	}
	out = append(out, pending{res.Server, der, key})
	for _, name := range opts.Clients {
		tmpl := &x509.Certificate{
			Subject:     pkix.Name{Organization: []string{"pimqtt"}, CommonName: name},
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		}
		der, key, err := issue(tmpl, ca, caKey, now)
		if err != nil {
			return nil, err
		}
		f := Files{Cert: filepath.Join(opts.Dir, name+".crt"), Key: filepath.Join(opts.Dir, name+".key")}
		out = append(out, pending{f, der, key})
	}

	if !res.CAReused {
		if err := writeKeyPair(res.CA, ca.Raw, caKey); err != nil {
			return nil, err
		}
	}
	for i, p := range out {
		leaf, err := x509.ParseCertificate(p.der)
		if err != nil {
			return nil, fmt.Errorf("cert: parse the certificate just made: %w", err)
		}
		p.files.NotAfter = leaf.NotAfter
		if err := writeKeyPair(p.files, p.der, p.key); err != nil {
			return nil, err
		}
		if i == 0 {
			res.Server = p.files
		} else {
			res.Clients = append(res.Clients, p.files)
		}
	}
	return res, nil
}

// normalizeNames lowercases and deduplicates the names and addresses and
// refuses what no certificate can hold.
func normalizeNames(names []string, ips []net.IP) ([]string, []net.IP, error) {
	var outNames []string
	for _, n := range names {
		n = strings.ToLower(strings.TrimSuffix(strings.TrimSpace(n), "."))
		if ip := net.ParseIP(n); ip != nil {
			ips = append(ips, ip)
			continue
		}
		if !validDNSName(n) {
			return nil, nil, fmt.Errorf("cert: host name %q: want letters, digits, '-' and '.' (an address goes in the IP list)", n)
		}
		if !slices.Contains(outNames, n) {
			outNames = append(outNames, n)
		}
	}
	var outIPs []net.IP
	for _, ip := range ips {
		if ip == nil {
			return nil, nil, errors.New("cert: an empty IP address")
		}
		if v4 := ip.To4(); v4 != nil {
			ip = v4
		}
		if !slices.ContainsFunc(outIPs, ip.Equal) {
			outIPs = append(outIPs, ip)
		}
	}
	if len(outNames) == 0 && len(outIPs) == 0 {
		return nil, nil, errors.New("cert: no host name or address for the server certificate")
	}
	return outNames, outIPs, nil
}

func validDNSName(n string) bool {
	if n == "" || len(n) > 253 {
		return false
	}
	for _, label := range strings.Split(n, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, r := range label {
			if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-') {
				return false
			}
		}
	}
	return true
}

func commonName(names []string, ips []net.IP) string {
	if len(names) > 0 {
		return names[0]
	}
	return ips[0].String()
}

// homeDomains are the names a new CA may vouch for besides those asked
// for: mDNS names (.local), localhost, and the local domains home routers
// hand out (.lan, .home, .home.arpa, .internal, .localdomain, .fritz.box).
// None of them is a public domain, so a phone that trusts the CA cannot be
// fooled about a real site.
var homeDomains = []string{"local", "localhost", "lan", "home", "home.arpa", "internal", "localdomain", "fritz.box"}

// homeRanges are the addresses a new CA may vouch for besides those asked
// for: loopback, RFC 1918, link local, and IPv6 unique local and link
// local addresses.
var homeRanges = []string{
	"127.0.0.0/8", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "169.254.0.0/16",
	"::1/128", "fc00::/7", "fe80::/10",
}

// newCA makes a CA whose name constraints admit homeDomains, homeRanges
// and the names and addresses asked for now.
func newCA(names []string, ips []net.IP, now time.Time) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	permittedDNS := slices.Clone(homeDomains)
	for _, n := range names {
		if !slices.ContainsFunc(permittedDNS, func(p string) bool { return n == p || strings.HasSuffix(n, "."+p) }) {
			permittedDNS = append(permittedDNS, n)
		}
	}
	var permittedIPs []*net.IPNet
	for _, r := range homeRanges {
		_, n, err := net.ParseCIDR(r)
		if err != nil {
			return nil, nil, fmt.Errorf("cert: home range %s: %w", r, err)
		}
		permittedIPs = append(permittedIPs, n)
	}
	for _, ip := range ips {
		if !slices.ContainsFunc(permittedIPs, func(n *net.IPNet) bool { return n.Contains(ip) }) {
			bits := 8 * len(ip)
			permittedIPs = append(permittedIPs, &net.IPNet{IP: ip, Mask: net.CIDRMask(bits, bits)})
		}
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("cert: generate the CA key: %w", err)
	}
	serial, err := serialNumber()
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject: pkix.Name{
			Organization: []string{"pimqtt"},
			// The name phones list among trusted certificates: say whose
			// and when, so an old one can be told from a new one.
			CommonName: fmt.Sprintf("pimqtt local CA %s %s", commonName(names, ips), now.UTC().Format("2006-01-02")),
		},
		NotBefore:             now.Add(-backdate),
		NotAfter:              now.Add(CAValidity),
		IsCA:                  true,
		BasicConstraintsValid: true,
		MaxPathLenZero:        true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		PermittedDNSDomains:   permittedDNS,
		PermittedIPRanges:     permittedIPs,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, nil, fmt.Errorf("cert: make the CA certificate: %w", err)
	}
	ca, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, fmt.Errorf("cert: parse the CA certificate just made: %w", err)
	}
	return ca, key, nil
}

// errNoCA is loadCA's answer when neither of the CA's files exists.
var errNoCA = errors.New("no CA yet")

// loadCA reads an existing CA. It returns errNoCA only when neither file
// exists: a CA certificate without its key (or a key without its
// certificate) is an error, never a reason to overwrite either.
func loadCA(f Files, now time.Time) (*x509.Certificate, crypto.Signer, error) {
	certPEM, certErr := os.ReadFile(f.Cert)
	keyPEM, keyErr := os.ReadFile(f.Key)
	switch {
	case errors.Is(certErr, os.ErrNotExist) && errors.Is(keyErr, os.ErrNotExist):
		return nil, nil, errNoCA
	case certErr != nil && keyErr == nil:
		return nil, nil, fmt.Errorf("cert: the CA key %s exists but its certificate cannot be read (restore it, or move the key away to make a new CA): %w", f.Key, certErr)
	case keyErr != nil && certErr == nil:
		return nil, nil, fmt.Errorf("cert: the CA certificate %s exists but its key cannot be read (restore it, or move both away to make a new CA, which every phone must then trust again): %w", f.Cert, keyErr)
	case certErr != nil:
		return nil, nil, fmt.Errorf("cert: read the CA: %w", errors.Join(certErr, keyErr))
	}
	ca, err := parseCertPEM(certPEM)
	if err != nil {
		return nil, nil, fmt.Errorf("cert: CA certificate %s: %w", f.Cert, err)
	}
	if !ca.IsCA {
		return nil, nil, fmt.Errorf("cert: %s is not a CA certificate", f.Cert)
	}
	if now.After(ca.NotAfter) {
		return nil, nil, fmt.Errorf("cert: the CA %s expired on %s: move %s and %s away to make a new one (and install it on the phones again)",
			f.Cert, ca.NotAfter.Format(time.DateOnly), f.Cert, f.Key)
	}
	key, err := parseKeyPEM(keyPEM)
	if err != nil {
		return nil, nil, fmt.Errorf("cert: CA key %s: %w", f.Key, err)
	}
	if pub, ok := key.Public().(interface{ Equal(crypto.PublicKey) bool }); !ok || !pub.Equal(ca.PublicKey) {
		return nil, nil, fmt.Errorf("cert: the CA key %s does not belong to the CA certificate %s", f.Key, f.Cert)
	}
	return ca, key, nil
}

func parseCertPEM(b []byte) (*x509.Certificate, error) {
	block, _ := pem.Decode(b)
	if block == nil || block.Type != "CERTIFICATE" {
		return nil, errors.New("no PEM CERTIFICATE block")
	}
	return x509.ParseCertificate(block.Bytes)
}

func parseKeyPEM(b []byte) (crypto.Signer, error) {
	block, _ := pem.Decode(b)
	if block == nil {
		return nil, errors.New("no PEM block")
	}
	var key any
	var err error
	switch block.Type {
	case "PRIVATE KEY":
		key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	case "EC PRIVATE KEY":
		key, err = x509.ParseECPrivateKey(block.Bytes)
	case "RSA PRIVATE KEY":
		key, err = x509.ParsePKCS1PrivateKey(block.Bytes)
	default:
		return nil, fmt.Errorf("PEM block %q is not a private key", block.Type)
	}
	if err != nil {
		return nil, err
	}
	s, ok := key.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("a %T cannot sign", key)
	}
	return s, nil
}

// issue signs a new key's certificate from tmpl with the CA.
func issue(tmpl, ca *x509.Certificate, caKey crypto.Signer, now time.Time) ([]byte, *ecdsa.PrivateKey, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("cert: generate a key: %w", err)
	}
	if tmpl.SerialNumber, err = serialNumber(); err != nil {
		return nil, nil, err
	}
	tmpl.NotBefore = now.Add(-backdate)
	tmpl.NotAfter = now.Add(LeafValidity)
	if tmpl.NotAfter.After(ca.NotAfter) {
		tmpl.NotAfter = ca.NotAfter
	}
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	tmpl.BasicConstraintsValid = true
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, key.Public(), caKey)
	if err != nil {
		return nil, nil, fmt.Errorf("cert: sign the certificate for %s: %w", tmpl.Subject.CommonName, err)
	}
	return der, key, nil
}

// checkServer verifies the new server certificate as a client will, so a
// reused CA whose name constraints exclude a new name is reported before
// anything is written.
func checkServer(der []byte, ca *x509.Certificate, names []string, ips []net.IP, now time.Time) error {
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return fmt.Errorf("cert: parse the server certificate just made: %w", err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca)
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
		var inv x509.CertificateInvalidError
		if errors.As(err, &inv) && inv.Reason == x509.CANotAuthorizedForThisName {
			return fmt.Errorf("cert: the existing CA may only vouch for the names and addresses it was made for (%s), not all of %s: "+
				"move its ca.crt and ca.key away to make a new CA (which every phone must then trust again): %w",
				constraintsText(ca), strings.Join(nameList(names, ips), ", "), err)
		}
		return fmt.Errorf("cert: the server certificate does not verify against its CA: %w", err)
	}
	return nil
}

func constraintsText(ca *x509.Certificate) string {
	var parts []string
	parts = append(parts, ca.PermittedDNSDomains...)
	for _, n := range ca.PermittedIPRanges {
		parts = append(parts, n.String())
	}
	return strings.Join(parts, ", ")
}

func nameList(names []string, ips []net.IP) []string {
	out := append([]string(nil), names...)
	for _, ip := range ips {
		out = append(out, ip.String())
	}
	return out
}

// Fingerprint returns the SHA-256 fingerprint of c as hex pairs joined by
// ':', the form Android, iOS and openssl x509 -fingerprint show.
func Fingerprint(c *x509.Certificate) string {
	sum := sha256.Sum256(c.Raw)
	parts := make([]string, len(sum))
	for i, b := range sum {
		parts[i] = fmt.Sprintf("%02X", b)
	}
	return strings.Join(parts, ":")
}

func serialNumber() (*big.Int, error) {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("cert: serial number: %w", err)
	}
	return n.Add(n, big.NewInt(1)), nil
}

// writeKeyPair writes the key first: a broker reloading between the two
// renames sees a key that does not match the old certificate, refuses the
// pair and keeps serving the old one, and the next reload gets both.
func writeKeyPair(f Files, certDER []byte, key crypto.Signer) error {
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return fmt.Errorf("cert: encode key: %w", err)
	}
	if err := writeFileAtomic(f.Key, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		return err
	}
	return writeFileAtomic(f.Cert, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: certDER}), 0o644)
}

// writeFileAtomic replaces path with data through a temporary file in the
// same directory. CreateTemp makes it 0600, so a key is never readable
// by others, not even briefly; perm is set before the rename.
func writeFileAtomic(path string, data []byte, perm os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("cert: write %s: %w", path, err)
	}
	defer os.Remove(tmp.Name()) // after a successful rename there is nothing left to remove
	if err := tmp.Chmod(perm); err != nil {
		_ = tmp.Close()
		return fmt.Errorf("cert: write %s: %w", path, err)
	}
	if _, err := tmp.Write(data); err != nil {
		_ = tmp.Close()
		return fmt.Errorf("cert: write %s: %w", path, err)
	}
	if err := tmp.Sync(); err != nil {
		_ = tmp.Close()
		return fmt.Errorf("cert: write %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("cert: write %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("cert: write %s: %w", path, err)
	}
	return nil
}
