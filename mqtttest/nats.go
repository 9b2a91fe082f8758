package mqtttest

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
)

// Facts about Debian's nats-server 2.9.10 as an MQTT broker, checked by
// TestNATSFacts and measured by TestNATSCluster on a three-node loopback
// cluster (one machine of 2 cores, go test -race):
//
//   - MQTT is 3.1.1 only, QoS 0 and 1 (a QoS 2 SUBSCRIBE is granted QoS 1),
//     and needs JetStream and server_name. Client ids are required.
//   - The MQTT streams ($MQTT_sess, $MQTT_msgs, $MQTT_rmsgs) are created on
//     the first MQTT CONNECT, with 3 replicas in a cluster of 3 (the default
//     when mqtt { stream_replicas } is not set); each QoS 1 subscription is
//     a JetStream consumer with 3 replicas too. That first CONNECT takes
//     about 3 s, the first QoS 1 SUBSCRIBE on each node about 0.7 s;
//     StartNATSCluster makes them, so the cluster is ready 3-6.5 s after
//     start. A CONNECT before a node knows the meta leader hangs 4 s and
//     fails, hence the wait for that log line first.
//   - Killing one node of three keeps MQTT working on the other two (R3
//     streams and consumers keep a quorum of 2), but not at once. When the
//     killed node led JetStream's meta group, a client on a survivor was
//     served again (CONNECT, QoS 1 SUBSCRIBE, retained QoS 1 PUBLISH and
//     its delivery) 8.5-17.6 s after the SIGKILL (seven runs; 37 s once
//     while other test suites loaded the machine). Meanwhile a CONNECT
//     hangs 4 s and the server closes the connection (its JetStream request
//     timed out; paho says EOF), and a SUBSCRIBE that got its SUBACK may
//     miss a QoS 1 message published and acknowledged right after. No
//     configuration option shortens raft's election timeouts in 2.9.
//   - Under a burst of QoS 1 SUBSCRIBEs (twenty clients at once) a
//     consumer's creation can time out after 4 s: nats-server then answers
//     SUBACK 0x80 (failure) on a connection that stays up. Such a refusal is
//     transient, unlike an ACL's: a client must subscribe again or
//     reconnect.
//   - A client receives its own publish when it is subscribed to the topic
//     (no no-local in 3.1.1): a bridge must drop its own echoes.
//   - CONNECT with protocol level 0x84 (a mosquitto bridge's try_private)
//     is answered CONNACK 1 (unacceptable protocol version).
//   - A retained message published on one node is delivered, retain=1, to a
//     SUBSCRIBE on another node; live messages arrive with retain=0.
//   - Wills work across nodes when the client's connection drops. When the
//     client's node itself is killed, its will is never published (the
//     node that held it is gone): a status topic keeps the client's last
//     retained "online" until the client connects again somewhere.
//   - A client id whose session lived on the killed node connects on
//     another node as soon as a fresh id does (same failover window). A
//     CONNECT with an id whose earlier CONNECT the server is still
//     processing is refused (logged "other session with client ID ... is
//     in the process of connecting").

// StartNATSCluster starts n nats-server processes on 127.0.0.1 forming one
// cluster (routes), each with JetStream (its own store directory under
// t.TempDir()), a server_name and an mqtt block, and returns once every node
// answers an MQTT CONNECT and a message published on each node reaches a
// subscriber on another (the JetStream meta leader is elected and the MQTT
// streams exist). It fails the test when nats-server is missing
// (RequireTool). The ports are picked, and picked again when a node fails to
// bind one (WithPickedPorts). Every node is killed at cleanup; the nodes'
// logs are printed with t.Log when the test failed.
func StartNATSCluster(t testing.TB, n int) *NATSCluster {
	t.Helper()
	return startNATSCluster(t, n, pickPorts)
}

// startNATSCluster is StartNATSCluster with the port picker as a
// parameter.
func startNATSCluster(t testing.TB, n int, pick func(testing.TB, int) []int) *NATSCluster {
	t.Helper()
	if n < 1 {
		t.Fatalf("StartNATSCluster: n = %d, want at least 1", n)
	}
	c := &NATSCluster{bin: RequireTool(t, "nats-server", "nats-server"), dir: t.TempDir(),
		name: fmt.Sprintf("mqtttest-%d-%s", os.Getpid(), strconv.FormatInt(time.Now().UnixNano(), 36))}
	t.Cleanup(func() {
		for _, node := range c.Nodes {
			node.stop()
		}
		if t.Failed() {
			for _, node := range c.Nodes {
				t.Logf("nats-server %s log:\n%s", node.Name, node.log)
			}
		}
	})
	start := time.Now()
	attempt := 0
	for formation := 1; ; formation++ {
		var notFormed error
		withPorts(t, 2*n, pick, func(ports []int) error {
			attempt++
			for _, node := range c.Nodes {
				node.stop()
			}
			c.Nodes = make([]*NATSNode, n)
			for i := range n {
				c.Nodes[i] = &NATSNode{
					Name:        fmt.Sprintf("n%d", i+1),
					cluster:     c,
					clusterPort: ports[2*i],
					mqttPort:    ports[2*i+1],
					storeDir:    filepath.Join(c.dir, fmt.Sprintf("store-%d-n%d", attempt, i+1)),
					conf:        filepath.Join(c.dir, fmt.Sprintf("n%d-%d.conf", i+1, attempt)),
					log:         &SyncBuffer{},
				}
			}
			for _, node := range c.Nodes {
				if err := os.WriteFile(node.conf, []byte(c.config(node)), 0o600); err != nil {
					return fmt.Errorf("write nats-server config: %w", err)
				}
			}
			// Every node first, then wait: a node's routes only form once the
			// others listen, and JetStream waits for its peers.
			for _, node := range c.Nodes {
				if err := node.run(); err != nil {
					return err
				}
			}
			err := waitStarted(c.Nodes)
			if errors.Is(err, errNotFormed) && formation < natsFormations {
				notFormed = err
				return nil
			}
			return err
		})
		if notFormed == nil {
			break
		}
		// Seen under load: two nodes elect a JetStream leader and the third never
		// hears of it. Start again, on new ports, rather than wait for it.
		first, _, _ := strings.Cut(notFormed.Error(), "\n")
		t.Logf("nats cluster did not form (attempt %d of %d), starting it again: %s", formation, natsFormations, first)
		for _, node := range c.Nodes {
			node.stop()
		}
	}
	if err := c.waitReady(c.Nodes); err != nil {
		t.Fatalf("nats cluster of %d not ready: %v", n, err)
	}
	t.Logf("nats cluster of %d ready in %v: MQTT on %s", n, time.Since(start).Round(time.Millisecond), strings.Join(c.URLs(), " "))
	return c
}

// NATSCluster is a cluster of nats-server processes started by
// StartNATSCluster.
type NATSCluster struct {
	// Nodes are the cluster's servers, named n1, n2, ...
	Nodes []*NATSNode

	bin string
	dir string
	// name is the cluster's own name. Nodes of other clusters (another test's, whose
	// killed node's route port this cluster may now hold, retried by its peers for as
	// long as they run) are refused for a name that is not this one, instead of
	// merging into this cluster and leaving it without a JetStream leader.
	name string
}

// URLs returns every node's MQTT URL, in the order of Nodes.
func (c *NATSCluster) URLs() []string {
	urls := make([]string, len(c.Nodes))
	for i, n := range c.Nodes {
		urls[i] = n.URL()
	}
	return urls
}

// config is the configuration file of node: a client port the kernel
// picks (nothing here uses NATS clients; -1 is nats-server's "any port"),
// routes to every node, JetStream, MQTT.
func (c *NATSCluster) config(node *NATSNode) string {
	routes := make([]string, 0, len(c.Nodes))
	for _, other := range c.Nodes {
		routes = append(routes, fmt.Sprintf("nats-route://127.0.0.1:%d", other.clusterPort))
	}
	return fmt.Sprintf(`server_name: %s
listen: "127.0.0.1:-1"
jetstream {
  store_dir: %q
}
cluster {
  name: %s
  listen: "127.0.0.1:%d"
  routes: [%s]
}
mqtt {
  listen: "127.0.0.1:%d"
}
`, node.Name, node.storeDir, c.name, node.clusterPort, strings.Join(routes, ", "), node.mqttPort)
}

// NATSNode is one nats-server of a NATSCluster.
type NATSNode struct {
	// Name is the node's server_name: n1, n2, ...
	Name string

	cluster     *NATSCluster
	clusterPort int
	mqttPort    int
	storeDir    string
	conf        string
	log         *SyncBuffer // every run's output, in order

	mu   sync.Mutex
	proc *natsProcess // nil before the first run
}

// natsProcess is one run of a node.
type natsProcess struct {
	cmd     *exec.Cmd
	exited  chan struct{} // closed once it has exited and been waited for
	written chan struct{} // signalled (without blocking) on every write to the log
}

// MQTTAddr returns the node's MQTT address, 127.0.0.1:PORT.
func (n *NATSNode) MQTTAddr() string { return fmt.Sprintf("127.0.0.1:%d", n.mqttPort) }

// URL returns the node's MQTT URL, tcp://127.0.0.1:PORT.
func (n *NATSNode) URL() string { return "tcp://" + n.MQTTAddr() }

// Log returns what the node has logged so far, over all its runs.
func (n *NATSNode) Log() string { return n.log.String() }

// Kill ends the node with SIGKILL, as a crash or a pulled plug does, and
// returns once the process has exited (the kernel has then closed its
// sockets, so its clients see their connections end).
func (n *NATSNode) Kill(t testing.TB) {
	t.Helper()
	n.mu.Lock()
	p := n.proc
	n.mu.Unlock()
	if p == nil {
		t.Fatalf("nats-server %s: Kill before it ran", n.Name)
	}
	if err := p.cmd.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
		t.Fatalf("nats-server %s: kill: %v", n.Name, err)
	}
	select {
	case <-p.exited:
	case <-time.After(WaitTimeout):
		t.Fatalf("nats-server %s still running %v after SIGKILL", n.Name, WaitTimeout)
	}
}

// Restart starts a node that was killed again, with the same ports and
// store directory, and returns once it answers MQTT: a client connected to
// it receives a message it published there (so the node has rejoined the
// JetStream cluster). It fails the test if the node is still running.
func (n *NATSNode) Restart(t testing.TB) {
	t.Helper()
	n.mu.Lock()
	p := n.proc
	n.mu.Unlock()
	if p != nil {
		select {
		case <-p.exited:
		default:
			t.Fatalf("nats-server %s: Restart while it runs: Kill it first", n.Name)
		}
	}
	fmt.Fprintf(n.log, "--- mqtttest: restart of %s ---\n", n.Name)
	if err := n.run(); err != nil {
		t.Fatalf("%v", err)
	}
	if err := waitStarted([]*NATSNode{n}); err != nil {
		t.Fatalf("restart: %v", err)
	}
	if err := n.cluster.waitReady([]*NATSNode{n}); err != nil {
		t.Fatalf("nats-server %s restarted but does not answer MQTT: %v", n.Name, err)
	}
}

// run starts the node's process.
func (n *NATSNode) run() error {
	written := make(chan struct{}, 1)
	w := notifyWriter{w: n.log, written: written}
	cmd := exec.Command(n.cluster.bin, "-c", n.conf)
	cmd.Stdout, cmd.Stderr = w, w
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start nats-server %s: %w", n.Name, err)
	}
	p := &natsProcess{cmd: cmd, exited: make(chan struct{}), written: written}
	go func() { _ = cmd.Wait(); close(p.exited) }()
	n.mu.Lock()
	n.proc = p
	n.mu.Unlock()
	return nil
}

// natsFormations is how many times StartNATSCluster starts a cluster that does not form, and
// natsFormTimeout how long each node may take to know its JetStream leader (about 1 s
// normally, on this 2-core machine while other tests run too).
const (
	natsFormations  = 3
	natsFormTimeout = 15 * time.Second
)

// errNotFormed is what a node's wait returns when it does not know a JetStream leader in time.
var errNotFormed = errors.New("nats cluster not formed")

// errAborted is what a node's wait returns when another node's failed.
var errAborted = errors.New("aborted: another node failed")

// waitStarted waits for every node at once (waitStarted of a node) and
// returns the first error: a node that could not bind its port exits at
// once, while the others would wait in vain for their JetStream peer.
func waitStarted(nodes []*NATSNode) error {
	errs := make(chan error, len(nodes))
	abort := make(chan struct{})
	for _, node := range nodes {
		go func() { errs <- node.waitStarted(abort) }()
	}
	var first error
	for range nodes {
		if err := <-errs; err != nil && first == nil {
			first = err
			close(abort)
		}
	}
	return first
}

// waitStarted waits until the node's log says its MQTT and route listeners
// are bound and it knows JetStream's meta leader. An MQTT CONNECT before
// that hangs for 4 s and fails (the session stream lookup it makes is
// lost), so waiting for the log line saves seconds at every start. The
// error wraps ErrPortTaken when the node exited because a port was taken.
func (n *NATSNode) waitStarted(abort <-chan struct{}) error {
	n.mu.Lock()
	p := n.proc
	n.mu.Unlock()
	// Only this run's part of the log counts.
	from := strings.LastIndex(n.log.String(), "--- mqtttest: restart")
	deadline := time.NewTimer(natsFormTimeout)
	defer deadline.Stop()
	for {
		log := n.log.String()
		if from > 0 {
			log = log[from:]
		}
		if strings.Contains(log, "Listening for MQTT clients on") && strings.Contains(log, "Listening for route connections on") &&
			(strings.Contains(log, "JetStream cluster new metadata leader") || strings.Contains(log, "Self is new JetStream cluster metadata leader")) {
			return nil
		}
		select {
		case <-p.written:
		case <-abort:
			return errAborted
		case <-p.exited:
			log := n.log.String()
			if strings.Contains(log, "address already in use") {
				return fmt.Errorf("%w: nats-server %s log:\n%s", ErrPortTaken, n.Name, log)
			}
			return fmt.Errorf("nats-server %s exited before it was ready (%v); its log:\n%s", n.Name, p.cmd.ProcessState, log)
		case <-deadline.C:
			return fmt.Errorf("%w: nats-server %s not listening or without a JetStream meta leader after %v; its log:\n%s", errNotFormed, n.Name, natsFormTimeout, log)
		}
	}
}

// stop kills the node's process, if it runs, and waits for it.
func (n *NATSNode) stop() {
	n.mu.Lock()
	p := n.proc
	n.mu.Unlock()
	if p == nil {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.exited
}

// natsReadyTimeout bounds waitReady: JetStream elects its meta leader and
// creates the MQTT streams in a few seconds on a quiet machine, but CI
// shares the machine with builds.
const natsReadyTimeout = 60 * time.Second

// natsProbeTimeout bounds one probe's step (CONNECT, SUBSCRIBE, PUBLISH,
// delivery). nats-server itself gives up on a JetStream request after about
// 4 s, so a probe that waited longer would only wait for an error.
const natsProbeTimeout = 5 * time.Second

// waitReady probes each of nodes until it works or natsReadyTimeout
// passes: a client on the node subscribes with QoS 1 and receives a QoS 1
// message published on the next node of the cluster (itself when alone),
// which needs the routes, JetStream's meta leader and the MQTT streams.
func (c *NATSCluster) waitReady(nodes []*NATSNode) error {
	deadline := time.Now().Add(natsReadyTimeout)
	for _, node := range nodes {
		next := c.Nodes[0]
		for i, other := range c.Nodes {
			if other == node {
				next = c.Nodes[(i+1)%len(c.Nodes)]
			}
		}
		var err error
		for attempt := 0; ; attempt++ {
			if err = probe(node, next); err == nil {
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("%s (published on %s) after %d attempts in %v: %w", node.Name, next.Name, attempt+1, natsReadyTimeout, err)
			}
			time.Sleep(100 * time.Millisecond) // between attempts, not synchronisation
		}
	}
	return nil
}

// probe subscribes on sub's node and publishes on pub's, and returns nil
// once the message arrived.
func probe(sub, pub *NATSNode) error {
	topic := fmt.Sprintf("mqtttest/ready/%s/%d", sub.Name, time.Now().UnixNano())
	got := make(chan struct{}, 1)
	s, err := probeClient(sub, "sub")
	if err != nil {
		return err
	}
	defer s.Disconnect(0)
	tok := s.Subscribe(topic, 1, func(paho.Client, paho.Message) {
		select {
		case got <- struct{}{}:
		default:
		}
	})
	if err := wait(tok, "subscribe on "+sub.Name); err != nil {
		return err
	}
	p := s
	if pub != sub {
		if p, err = probeClient(pub, "pub"); err != nil {
			return err
		}
		defer p.Disconnect(0)
	}
	if err := wait(p.Publish(topic, 1, false, "ready"), "publish on "+pub.Name); err != nil {
		return err
	}
	select {
	case <-got:
		return nil
	case <-time.After(natsProbeTimeout):
		return fmt.Errorf("published on %s, not delivered on %s within %v", pub.Name, sub.Name, natsProbeTimeout)
	}
}

// probeClient connects a paho client with a fresh client id to node.
func probeClient(node *NATSNode, role string) (paho.Client, error) {
	opts := paho.NewClientOptions().AddBroker(node.URL()).
		SetClientID(fmt.Sprintf("mqtttest-%s-%s-%d", role, node.Name, time.Now().UnixNano())).
		SetProtocolVersion(4).SetAutoReconnect(false).
		SetConnectTimeout(natsProbeTimeout).SetWriteTimeout(natsProbeTimeout)
	c := paho.NewClient(opts)
	if err := wait(c.Connect(), "connect to "+node.Name); err != nil {
		return nil, err
	}
	return c, nil
}

// wait waits for tok within natsProbeTimeout.
func wait(tok paho.Token, what string) error {
	if !tok.WaitTimeout(natsProbeTimeout) {
		return fmt.Errorf("%s: no answer within %v", what, natsProbeTimeout)
	}
	if err := tok.Error(); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	return nil
}

// MetaLeader returns the node that leads JetStream's meta group now, from
// the nodes' logs ("Self is new JetStream cluster metadata leader" on the
// leader, "new metadata leader: NAME/CLUSTER" on the others): the last
// such line of any node names it. Killing it is the worst case for a
// failover: every node then waits for a new election before JetStream, and
// so MQTT, answers again.
func (c *NATSCluster) MetaLeader(t testing.TB) *NATSNode {
	t.Helper()
	var best time.Time
	var leader *NATSNode
	for _, n := range c.Nodes {
		for _, l := range strings.Split(n.Log(), "\n") {
			name := ""
			switch {
			case strings.Contains(l, "Self is new JetStream cluster metadata leader"):
				name = n.Name
			case strings.Contains(l, "new metadata leader: "):
				name, _, _ = strings.Cut(l[strings.Index(l, "new metadata leader: ")+len("new metadata leader: "):], "/")
			default:
				continue
			}
			// "[pid] 2006/01/02 15:04:05.000000 [INF] ..."
			f := strings.Fields(l)
			if len(f) < 3 {
				continue
			}
			at, err := time.Parse("2006/01/02 15:04:05.000000", f[1]+" "+f[2])
			if err != nil || at.Before(best) {
				continue
			}
			i := slices.IndexFunc(c.Nodes, func(x *NATSNode) bool { return x.Name == strings.TrimSpace(name) })
			if i >= 0 {
				best, leader = at, c.Nodes[i]
			}
		}
	}
	if leader == nil {
		t.Fatal("no node's log names a JetStream meta leader")
	}
	return leader
}
