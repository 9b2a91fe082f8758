// Package storage keeps what pimqtt's broker must not forget across a
// restart, kill -9 or a power cut: retained messages, and the persistent
// sessions (MQTT 3.1.1 clean session false, MQTT 5 session expiry > 0)
// with their subscriptions and the QoS 1 and 2 messages queued for them or
// in flight.
//
// A Store is a Mochi hook on one bbolt file. What it writes, and when:
//
//   - A QoS 1 or 2 message for a persistent session is on disk before its
//     publisher gets PUBACK (or PUBREC): the publisher's acknowledgement
//     waits for the transaction that holds it. Many publishers share one
//     transaction (group commit), so under load many messages cost one
//     pair of fsyncs. The message is stored once however many sessions it
//     goes to; each session gets a small delivery record, which becomes an
//     inflight record (with the packet id) when Mochi sends or queues it,
//     and goes when the subscriber acknowledges it.
//   - The steps of QoS 2 that make "exactly once" survive a crash (the
//     PUBREC state of a received message, the packet id of a message sent,
//     the PUBREL state) are on disk before the packet that depends on them
//     is sent.
//   - Subscriptions of persistent sessions are on disk before SUBACK.
//   - Everything else (acknowledgements from subscribers, disconnect
//     times, QoS 0 retained messages) is written with the next
//     transaction, or after Options.FlushDelay: a crash in between at most
//     sends a QoS 1 message again, as MQTT allows.
//   - Nothing is written when nothing changes: no statistics, no timers,
//     no rewrite of an identical retained message or session.
//
// Sessions that expire, and their messages, are deleted; the time a
// session disconnected is stored, so its expiry runs on across restarts.
//
// Storage faults never stop the broker: a data directory that cannot be
// written or a full disk is logged (at most once a minute), the broker
// serves from memory, changes are kept (bounded) and written when the disk
// accepts them again; a failed transaction leaves the file as it was. A
// file that cannot be read at start is renamed aside as
// PATH.corrupt-<unix time> and an empty store is started.
package storage

import (
	"errors"
	"fmt"
	"hash/maphash"
	"io/fs"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"runtime/debug"
	"slices"
	"sync"
	"syscall"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	mstorage "github.com/mochi-mqtt/server/v2/hooks/storage"
	"github.com/mochi-mqtt/server/v2/packets"
	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"

	"github.com/pimqtt/pimqtt/state"
)

// Defaults of Options.
const (
	DefaultFlushDelay    = time.Second
	DefaultRetryInterval = 30 * time.Second
	DefaultMaxPending    = 16 << 20
	// lockTimeout is how long Open waits for another process to let go
	// of the file.
	lockTimeout = 2 * time.Second
	// ackTimeout bounds how long an acknowledgement waits for the disk: a
	// dying SD card can block fsync for minutes, and a publisher's
	// keepalive must not run out meanwhile.
	ackTimeout = 10 * time.Second
	// closeTimeout bounds Close's last write.
	closeTimeout = 10 * time.Second
	// maxQueue bounds the bytes of changes handed to the writer and not
	// taken yet; publishers wait beyond it.
	maxQueue = 8 << 20
	// pageSize is the bbolt page size of a new file: 4 KiB, the flash
	// page of SD cards, also on kernels with 16 KiB pages (Pi 5).
	pageSize = 4096
	fileMode = 0o600 // messages and user names: the owner's only
	dirMode  = 0o755
)

// Options configures a Store.
type Options struct {
	// Path is the store file (pimqtt: DATA_DIR/pimqtt.db). Its directory
	// is created if missing.
	Path string
	// QueueExpiry drops a message queued for a disconnected persistent
	// session once it is older than this; 0 keeps it as long as the
	// session.
	QueueExpiry time.Duration
	// VolatileClients are client ids whose retained messages are not
	// stored, because they publish them again whenever they start (the
	// in-process device: its status, state and telemetry). Storing them
	// would only write the disk every telemetry interval.
	VolatileClients []string
	// FlushDelay is how long a change nobody waits for (a subscriber's
	// acknowledgement, a disconnect time, a QoS 0 retained message) may
	// wait for company before it is written; DefaultFlushDelay if 0.
	FlushDelay time.Duration
	// RetryInterval is the longest wait between attempts while the store
	// cannot be written (the first retry comes after a second, doubling);
	// DefaultRetryInterval if 0.
	RetryInterval time.Duration
	// MaxPending bounds the bytes of changes kept in memory while the
	// store cannot be written; beyond it changes are dropped (and
	// counted). DefaultMaxPending if 0.
	MaxPending int
	// OnlyIfWritable is for persistence nobody asked for: Open creates no
	// directory, and when the file cannot be opened for writing it
	// returns an error wrapping ErrUnavailable instead of serving from
	// memory and retrying.
	OnlyIfWritable bool
	Logger         *slog.Logger
}

// ErrUnavailable is what Open returns, wrapped with the cause, when
// Options.OnlyIfWritable is set and the file cannot be written.
var ErrUnavailable = errors.New("storage: no writable store")

// Stats counts what the store wrote.
type Stats struct {
	Commits  int64 // transactions written
	Syncs    int64 // fdatasync calls of those transactions (bbolt: two each)
	Bytes    int64 // bytes of pages those transactions wrote
	Failures int64 // transactions that could not be written
	Dropped  int64 // changes dropped while the store could not be written
	Pending  int64 // changes not written yet (keys changed, and changes not merged yet)
}

// Store is the storage hook: add it to the broker (broker.Options.Hooks),
// and Close it after the broker.
type Store struct {
	mqtt.HookBase
	opts     Options
	log      *slog.Logger
	w        *writer
	seed     maphash.Seed
	now      func() time.Time
	volatile map[string]bool

	mu         sync.Mutex
	sessions   map[string]*sessState
	msgs       map[uint64]*msgState
	retained   map[string]uint64 // topic → content hash of the stored message
	mirror     *mqtt.TopicsIndex // the persistent sessions' subscriptions
	mirrorLen  int
	next       uint64                 // the next message number
	publishing map[string]*publishing // by publisher client id
	boot       *bootData              // what Open read, until Mochi takes it
	handover   *handover              // what Mochi takes, after StoredClients

	stopSweep chan struct{}
	sweepDone chan struct{}
	closeOnce sync.Once
	closeErr  error
}

// sessState is a stored persistent session.
type sessState struct {
	rec  session
	subs map[string]subscription
	inf  map[uint16]infState
	dlv  map[uint64]struct{}
	// client is the session's client object while it is disconnected,
	// so that QueueExpiry can drop messages from its queue in memory too.
	client    *mqtt.Client
	connected bool
}

// infState is a stored inflight record.
type infState struct {
	kind    byte
	msg     uint64 // kindRef
	hash    uint64 // of the PUBLISH's content (kindRef, kindFull)
	created int64
}

// msgState is a stored message and what refers to it.
type msgState struct {
	refs    int // inflight records
	dlv     int // delivery records
	hash    uint64
	created int64
}

// publishing is a QoS 1 or 2 PUBLISH of a client being processed: the
// message stored for it, and the change its acknowledgement waits for.
type publishing struct {
	owner   *mqtt.Client
	msg     uint64 // 0: none stored
	hash    uint64
	topic   string
	targets []string // the sessions with a delivery record of msg
	wait    *change
}

// bootData is what Open read from the file.
type bootData struct {
	sessions map[string]session
	subs     map[string]map[string]subscription
	msgs     map[uint64]message
	inf      map[string]map[uint16]inflight
	dlv      map[string]map[uint64]delivery
	retained map[string]message
	// mtime is when the file was last written: the disconnect time of
	// the sessions that were connected when pimqtt stopped without
	// saying so (kill -9, power cut).
	mtime int64
	// cleanup deletes records found unusable.
	cleanup []op
}

// handover is what Mochi's StoredSubscriptions, StoredInflightMessages and
// StoredRetainedMessages return, prepared by StoredClients.
type handover struct {
	subs     []mstorage.Subscription
	inflight []mstorage.Message
	retained []mstorage.Message
}

// Open opens (or creates) the store file and reads it. It fails only when
// Path is empty or another process holds the file: a directory that
// cannot be written, a full disk or a file that cannot be read are
// logged, and the Store serves from memory (writing once it can).
func Open(opts Options) (*Store, error) {
	if opts.Path == "" {
		return nil, errors.New("storage: empty path")
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.FlushDelay <= 0 {
		opts.FlushDelay = DefaultFlushDelay
	}
	if opts.RetryInterval <= 0 {
		opts.RetryInterval = DefaultRetryInterval
	}
	if opts.MaxPending <= 0 {
		opts.MaxPending = DefaultMaxPending
	}
	s := &Store{
		opts:       opts,
		log:        opts.Logger,
		seed:       maphash.MakeSeed(),
		now:        time.Now,
		volatile:   map[string]bool{},
		sessions:   map[string]*sessState{},
		msgs:       map[uint64]*msgState{},
		retained:   map[string]uint64{},
		mirror:     mqtt.NewTopicsIndex(),
		next:       1,
		publishing: map[string]*publishing{},
	}
	for _, id := range opts.VolatileClients {
		s.volatile[id] = true
	}
	db, boot, err := s.openAndLoad()
	if err != nil {
		return nil, err
	}
	s.boot = boot
	for n := range boot.msgs {
		s.next = max(s.next, n+1)
	}
	s.w = newWriter(&writer{
		path:       opts.Path,
		log:        s.log,
		open:       s.reopen,
		flushDelay: opts.FlushDelay,
		retryMin:   min(time.Second, opts.RetryInterval),
		retryMax:   opts.RetryInterval,
		maxQueue:   maxQueue,
		maxPending: opts.MaxPending,
	}, db)
	if opts.QueueExpiry > 0 {
		s.stopSweep, s.sweepDone = make(chan struct{}), make(chan struct{})
		go s.sweep()
	}
	return s, nil
}

// boltOptions are the options of every bbolt.Open. The freelist is
// written with each transaction (one page): without it bbolt rebuilds it
// at open by walking the file in a goroutine of its own that panics on a
// damaged page, which would crash pimqtt instead of setting the file
// aside.
func boltOptions(readOnly bool) *bolt.Options {
	return &bolt.Options{
		Timeout:  lockTimeout,
		ReadOnly: readOnly,
		PageSize: pageSize,
		// Small: the map grows with the file (doubling from 32 KiB), which
		// suits a 32-bit Pi's address space.
		InitialMmapSize: 0,
	}
}

// openWritable opens the file for writing, creating it (and its buckets)
// if needed.
func (s *Store) openWritable() (db *bolt.DB, err error) {
	path := s.opts.Path
	if !s.opts.OnlyIfWritable {
		if err := os.MkdirAll(filepath.Dir(path), dirMode); err != nil {
			return nil, err
		}
	}
	_, statErr := os.Stat(path)
	created := errors.Is(statErr, fs.ErrNotExist)
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%w: %v", errCorrupt, r)
		}
		if err != nil && created {
			// A file that could not even be initialised (a full disk) is
			// no store: the next attempt starts it again.
			_ = os.Remove(path)
		}
	}()
	if err := checkPath(path); err != nil {
		return nil, err
	}
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	db, err = bolt.Open(path, fileMode, boltOptions(false))
	if err != nil {
		return nil, err
	}
	if err := ensureBuckets(db); err != nil {
		_ = db.Close()
		return nil, err
	}
	return db, nil
}

// reopen is the writer's openWritable: a file found damaged while pimqtt
// runs (after a write failed) is set aside and a new one started, which
// gets the changes not written yet; what the damaged file held is not
// restored at the next start.
func (s *Store) reopen() (*bolt.DB, error) {
	db, err := s.openWritable()
	if errors.Is(err, errCorrupt) {
		s.setAside(err)
		return s.openWritable()
	}
	return db, err
}

// ensureBuckets creates the buckets of a new file. It writes nothing when
// they are there.
func ensureBuckets(db *bolt.DB) error {
	missing := false
	_ = db.View(func(tx *bolt.Tx) error {
		for _, b := range buckets {
			missing = missing || tx.Bucket(b) == nil
		}
		return nil
	})
	if !missing {
		return nil
	}
	return db.Update(func(tx *bolt.Tx) error {
		for _, b := range buckets {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return tx.Bucket(bucketMeta).Put([]byte("version"), []byte{recordVersion})
	})
}

// errCorrupt marks a file whose content is damaged, as opposed to one that
// cannot be opened or written.
var errCorrupt = errors.New("damaged store file")

// unwritable says whether err is the file system refusing (permissions,
// read-only, full, missing directory, I/O error) rather than the file's
// content being bad: such a file is left in place.
func unwritable(err error) bool {
	for _, target := range []error{fs.ErrPermission, fs.ErrNotExist, syscall.EROFS, syscall.ENOSPC, syscall.EDQUOT, syscall.EIO} {
		if errors.Is(err, target) {
			return true
		}
	}
	return false
}

// openAndLoad opens the file and reads it. A damaged file is set aside and
// a new one started; a file that cannot be opened for writing is read if
// it can be, and the Store then starts without an open file.
func (s *Store) openAndLoad() (*bolt.DB, *bootData, error) {
	path := s.opts.Path
	var mtime int64
	if fi, err := os.Stat(path); err == nil {
		mtime = fi.ModTime().Unix()
	}
	db, err := s.openWritable()
	switch {
	case errors.Is(err, berrors.ErrTimeout):
		return nil, nil, fmt.Errorf("storage: %s is in use by another process (another pimqtt with the same data directory?): %w", path, err)
	case err != nil && unwritable(err) && s.opts.OnlyIfWritable:
		return nil, nil, fmt.Errorf("%w: %s: %w", ErrUnavailable, path, err)
	case err != nil && unwritable(err):
		s.log.Warn("storage: cannot open the store for writing; serving from memory, retrying (nothing changed from now on survives a restart until it can be written)",
			"file", path, "error", err,
			"hint", "make the data directory writable (systemd: StateDirectory=pimqtt), mount it read-write, or free space")
		boot, rerr := s.readOnly(path, mtime)
		if rerr != nil {
			return nil, nil, rerr
		}
		return nil, boot, nil
	case err != nil:
		s.setAside(err)
		if db, err = s.openWritable(); err != nil {
			s.log.Warn("storage: cannot create a new store; serving from memory, retrying", "file", path, "error", err)
			return nil, emptyBoot(), nil
		}
		return db, emptyBoot(), nil
	}
	boot, err := load(db, mtime)
	if err != nil {
		_ = db.Close()
		s.setAside(err)
		if db, err = s.openWritable(); err != nil {
			s.log.Warn("storage: cannot create a new store; serving from memory, retrying", "file", path, "error", err)
			return nil, emptyBoot(), nil
		}
		return db, emptyBoot(), nil
	}
	return db, boot, nil
}

// readOnly reads a file that cannot be opened for writing. A lock held by
// another process is an error; anything else starts empty.
func (s *Store) readOnly(path string, mtime int64) (boot *bootData, err error) {
	if _, err := os.Stat(path); err != nil {
		return emptyBoot(), nil
	}
	db, err := func() (db *bolt.DB, err error) {
		defer func() {
			if r := recover(); r != nil {
				err = fmt.Errorf("%w: %v", errCorrupt, r)
			}
		}()
		if err := checkPath(path); err != nil {
			return nil, err
		}
		defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
		return bolt.Open(path, fileMode, boltOptions(true))
	}()
	if errors.Is(err, berrors.ErrTimeout) {
		return nil, fmt.Errorf("storage: %s is in use by another process (another pimqtt with the same data directory?): %w", path, err)
	}
	if err == nil {
		boot, err = load(db, mtime)
		_ = db.Close()
	}
	if err != nil {
		s.log.Warn("storage: cannot read the store either; starting empty", "file", path, "error", err)
		return emptyBoot(), nil
	}
	return boot, nil
}

func emptyBoot() *bootData {
	return &bootData{
		sessions: map[string]session{},
		subs:     map[string]map[string]subscription{},
		msgs:     map[uint64]message{},
		inf:      map[string]map[uint16]inflight{},
		dlv:      map[string]map[uint64]delivery{},
		retained: map[string]message{},
	}
}

// setAside renames a damaged file, keeping it for inspection, as the
// device's state file does.
func (s *Store) setAside(why error) {
	kept, err := state.SetAside(s.opts.Path)
	if err != nil {
		s.log.Warn("storage: store file damaged and it could not be set aside; starting with an empty store",
			"file", s.opts.Path, "error", why, "rename_error", err)
		return
	}
	s.log.Warn("storage: store file damaged; set aside, starting with an empty store (retained messages and persistent sessions in it are not restored)",
		"file", s.opts.Path, "kept_as", kept, "error", why)
}

// load reads every record. Structural damage (a page that is not what it
// should be, anything that makes bbolt panic or fault) is errCorrupt; a
// record that does not decode, or refers to what is not there, is left
// out and deleted with the first write.
func load(db *bolt.DB, mtime int64) (boot *bootData, err error) {
	defer func() {
		if r := recover(); r != nil {
			boot, err = nil, fmt.Errorf("%w: %v", errCorrupt, r)
		}
	}()
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	boot = emptyBoot()
	boot.mtime = mtime
	err = db.View(func(tx *bolt.Tx) error {
		for _, b := range buckets {
			if tx.Bucket(b) == nil {
				return fmt.Errorf("%w: bucket %s missing", errCorrupt, b)
			}
		}
		if v := tx.Bucket(bucketMeta).Get([]byte("version")); len(v) != 1 || v[0] != recordVersion {
			return fmt.Errorf("%w: format version %v, want %d", errCorrupt, v, recordVersion)
		}
		// checkFile has walked the tree; reading every record is the
		// second line of defence (bbolt's own Tx.Check runs in a
		// goroutine of its own, where a panic would kill the process).
		return boot.read(tx)
	})
	return boot, err
}

// read decodes every bucket into b.
func (b *bootData) read(tx *bolt.Tx) error {
	bad := func(bucket byte, k []byte) { b.cleanup = append(b.cleanup, del(bucket, string(k))) }
	if err := tx.Bucket(bucketSessions).ForEach(func(k, v []byte) error {
		rec, err := decodeSession(v)
		if err != nil {
			bad(bSessions, k)
			return nil
		}
		b.sessions[string(k)] = rec
		return nil
	}); err != nil {
		return err
	}
	if err := tx.Bucket(bucketSubscriptions).ForEach(func(k, v []byte) error {
		client, filter, err := splitClientKey(k)
		rec, derr := decodeSubscription(v)
		if err != nil || derr != nil {
			bad(bSubscriptions, k)
			return nil
		}
		if b.subs[client] == nil {
			b.subs[client] = map[string]subscription{}
		}
		b.subs[client][string(filter)] = rec
		return nil
	}); err != nil {
		return err
	}
	if err := tx.Bucket(bucketMessages).ForEach(func(k, v []byte) error {
		m, err := decodeMessage(v)
		if err != nil || len(k) != 8 {
			bad(bMessages, k)
			return nil
		}
		b.msgs[beUint64(k)] = m
		return nil
	}); err != nil {
		return err
	}
	if err := tx.Bucket(bucketInflight).ForEach(func(k, v []byte) error {
		client, rest, err := splitClientKey(k)
		rec, derr := decodeInflight(v)
		if err != nil || derr != nil || len(rest) != 2 {
			bad(bInflight, k)
			return nil
		}
		if b.inf[client] == nil {
			b.inf[client] = map[uint16]inflight{}
		}
		b.inf[client][uint16(rest[0])<<8|uint16(rest[1])] = rec
		return nil
	}); err != nil {
		return err
	}
	if err := tx.Bucket(bucketDeliveries).ForEach(func(k, v []byte) error {
		client, rest, err := splitClientKey(k)
		rec, derr := decodeDelivery(v)
		if err != nil || derr != nil || len(rest) != 8 {
			bad(bDeliveries, k)
			return nil
		}
		if b.dlv[client] == nil {
			b.dlv[client] = map[uint64]delivery{}
		}
		b.dlv[client][beUint64(rest)] = rec
		return nil
	}); err != nil {
		return err
	}
	return tx.Bucket(bucketRetained).ForEach(func(k, v []byte) error {
		m, err := decodeMessage(v)
		if err != nil || string(k) != m.Topic {
			bad(bRetained, k)
			return nil
		}
		b.retained[string(k)] = m
		return nil
	})
}

func beUint64(b []byte) uint64 {
	var v uint64
	for _, c := range b {
		v = v<<8 | uint64(c)
	}
	return v
}

// Close writes what is pending and closes the file. Mochi calls it (as
// Stop) when the broker closes; later calls return the first one's error.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		if s.stopSweep != nil {
			close(s.stopSweep)
			<-s.sweepDone
		}
		s.closeErr = s.w.close(closeTimeout)
	})
	return s.closeErr
}

// Stats returns what the store has written so far.
func (s *Store) Stats() Stats {
	st := &s.w.stats
	return Stats{
		Commits:  st.commits.Load(),
		Syncs:    st.syncs.Load(),
		Bytes:    st.bytes.Load(),
		Failures: st.failures.Load(),
		Dropped:  st.dropped.Load(),
		Pending:  st.pendingOps.Load() + st.queued.Load(),
	}
}

// Path is the store file.
func (s *Store) Path() string { return s.opts.Path }

// contentHash identifies a PUBLISH's content: an acknowledgement or a
// resend of a stored message is recognised by it.
func (s *Store) contentHash(pk packets.Packet) uint64 {
	var h maphash.Hash
	h.SetSeed(s.seed)
	_, _ = h.Write(pk.Payload)
	var b [8]byte
	for i := range 8 {
		b[i] = byte(pk.Created >> (8 * i))
	}
	_, _ = h.Write(b[:])
	_, _ = h.WriteString(pk.Origin)
	return h.Sum64()
}

// packetOf rebuilds the PUBLISH a stored message and delivery stand for.
func packetOf(m message, d delivery, pid uint16) packets.Packet {
	return packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: d.QoS, Retain: d.Retain},
		PacketID:    pid,
		TopicName:   m.Topic,
		Payload:     m.Payload,
		Origin:      m.Origin,
		Created:     m.Created,
		Properties: packets.Properties{
			PayloadFormat:          m.PayloadFormat,
			PayloadFormatFlag:      m.FormatFlag,
			MessageExpiryInterval:  m.Expiry,
			ContentType:            m.ContentType,
			ResponseTopic:          m.ResponseTopic,
			CorrelationData:        m.Correlation,
			SubscriptionIdentifier: d.SubIDs,
			User:                   m.User,
		},
	}
}

// storedMessage is Mochi's form of a packet to restore.
func storedMessage(client string, pk packets.Packet) mstorage.Message {
	return mstorage.Message{
		Client:      client,
		Origin:      pk.Origin,
		TopicName:   pk.TopicName,
		Payload:     pk.Payload,
		FixedHeader: pk.FixedHeader,
		Created:     pk.Created,
		PacketID:    pk.PacketID,
		Properties: mstorage.MessageProperties{
			PayloadFormat:          pk.Properties.PayloadFormat,
			PayloadFormatFlag:      pk.Properties.PayloadFormatFlag,
			MessageExpiryInterval:  pk.Properties.MessageExpiryInterval,
			ContentType:            pk.Properties.ContentType,
			ResponseTopic:          pk.Properties.ResponseTopic,
			CorrelationData:        pk.Properties.CorrelationData,
			SubscriptionIdentifier: pk.Properties.SubscriptionIdentifier,
			User:                   pk.Properties.User,
		},
	}
}

// sessionExpiry is how long a disconnected session lasts: its own expiry
// (MQTT 5), else the broker's maximum, which Mochi applies to MQTT 3.1.1
// sessions.
func (s *Store) sessionExpiry(rec session) uint32 {
	maxExpiry := uint32(math.MaxUint32)
	if s.Opts != nil && s.Opts.Capabilities != nil {
		maxExpiry = s.Opts.Capabilities.MaximumSessionExpiryInterval
	}
	if rec.ProtocolVersion == 5 {
		return min(rec.Expiry, maxExpiry)
	}
	return maxExpiry
}

// restore turns what Open read into the in-memory index and Mochi's
// records, leaving out expired sessions and messages. It returns the
// changes that go with it: what was left out is deleted, deliveries get
// their packet ids, and sessions connected when pimqtt stopped get a
// disconnect time.
func (s *Store) restore() ([]mstorage.Client, []op) {
	b := s.boot
	s.boot = nil
	now := s.now().Unix()
	ops := b.cleanup
	h := &handover{}
	var clients []mstorage.Client

	ids := make([]string, 0, len(b.sessions))
	for id := range b.sessions {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	kept := map[string]bool{}
	for _, id := range ids {
		rec := b.sessions[id]
		expiry := s.sessionExpiry(rec)
		disc := rec.Disconnected
		if disc == 0 {
			disc = b.mtime
		}
		elapsed := max(now-disc, 0)
		if (rec.ProtocolVersion == 5 && rec.Expiry == 0) || (rec.ProtocolVersion < 5 && rec.Clean) || elapsed >= int64(expiry) {
			ops = append(ops, del(bSessions, id))
			s.log.Debug("storage: session expired while pimqtt was stopped", "client", id)
			continue
		}
		kept[id] = true
		if rec.Disconnected == 0 {
			rec.Disconnected = disc
			ops = append(ops, put(bSessions, id, encodeSession(rec)))
		}
		s.sessions[id] = &sessState{rec: rec, subs: map[string]subscription{}, inf: map[uint16]infState{}, dlv: map[uint64]struct{}{}}
		// Mochi restarts a restored session's expiry from now, and for
		// MQTT 3.1.1 clients it applies the broker's maximum: handing the
		// client over as MQTT 5 with what is left of its expiry makes it
		// expire when it would have had pimqtt kept running. The client's
		// own CONNECT replaces this record when it comes back.
		clients = append(clients, mstorage.Client{
			ID:              id,
			T:               mstorage.ClientKey,
			Listener:        rec.Listener,
			Username:        rec.Username,
			ProtocolVersion: 5,
			Properties: mstorage.ClientProperties{
				SessionExpiryInterval:     uint32(int64(expiry) - elapsed),
				SessionExpiryIntervalFlag: true,
				ReceiveMaximum:            rec.ReceiveMaximum,
				MaximumPacketSize:         rec.MaxPacketSize,
				RequestProblemInfo:        rec.ProblemInfo,
				RequestProblemInfoFlag:    rec.ProblemInfoFlag,
				RequestResponseInfo:       rec.ResponseInfo,
			},
		})
	}

	for client, subs := range b.subs {
		for filter, rec := range subs {
			if !kept[client] {
				ops = append(ops, del(bSubscriptions, subscriptionKey(client, filter)))
				continue
			}
			s.sessions[client].subs[filter] = rec
			s.mirrorSubscribe(client, filter, rec)
			h.subs = append(h.subs, mstorage.Subscription{
				T:                 mstorage.SubscriptionKey,
				Client:            client,
				Filter:            filter,
				Identifier:        rec.Identifier,
				RetainHandling:    rec.RetainHandling,
				Qos:               rec.QoS,
				RetainAsPublished: rec.RetainAsPublished,
				NoLocal:           rec.NoLocal,
			})
		}
	}

	queueLimit := int64(math.MinInt64)
	if s.opts.QueueExpiry > 0 {
		queueLimit = now - int64(s.opts.QueueExpiry/time.Second)
	}
	fresh := func(m message) bool { return !m.expired(now) && m.Created >= queueLimit }
	for client, recs := range b.inf {
		for pid, rec := range recs {
			key := inflightKey(client, pid)
			sess := s.sessions[client]
			if sess == nil {
				ops = append(ops, del(bInflight, key))
				continue
			}
			var pk packets.Packet
			st := infState{kind: rec.Kind, created: rec.Created}
			switch rec.Kind {
			case kindRef:
				m, ok := b.msgs[rec.Msg]
				if !ok || !fresh(m) {
					ops = append(ops, del(bInflight, key))
					continue
				}
				pk = packetOf(m, rec.Delivery, pid)
				st.msg = rec.Msg
				s.msgState(rec.Msg, m).refs++
			case kindFull:
				if !fresh(rec.Full) {
					ops = append(ops, del(bInflight, key))
					continue
				}
				pk = packetOf(rec.Full, rec.Delivery, pid)
			case kindPubrec:
				pk = packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pubrec}, PacketID: pid, Created: rec.Created}
			case kindPubrel:
				pk = packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pubrel, Qos: 1}, PacketID: pid, Created: rec.Created}
			}
			if rec.Kind == kindRef || rec.Kind == kindFull {
				st.hash = s.contentHash(pk)
				st.created = pk.Created
			}
			sess.inf[pid] = st
			h.inflight = append(h.inflight, storedMessage(client, pk))
		}
	}

	// Deliveries not yet sent when pimqtt stopped get packet ids now,
	// on disk before any is sent, in the order they were published.
	for client, recs := range b.dlv {
		sess := s.sessions[client]
		nums := make([]uint64, 0, len(recs))
		for n := range recs {
			nums = append(nums, n)
		}
		slices.Sort(nums)
		pid := uint16(0)
		for _, n := range nums {
			ops = append(ops, del(bDeliveries, deliveryKey(client, n)))
			m, ok := b.msgs[n]
			if sess == nil || !ok || !fresh(m) {
				continue
			}
			for pid++; pid != 0; pid++ {
				if _, used := sess.inf[pid]; !used {
					break
				}
			}
			if pid == 0 {
				s.log.Warn("storage: no packet id left for a stored message; dropped", "client", client)
				break
			}
			d := recs[n]
			pk := packetOf(m, d, pid)
			ops = append(ops, put(bInflight, inflightKey(client, pid), encodeInflight(inflight{Kind: kindRef, Msg: n, Delivery: d})))
			s.msgState(n, m).refs++
			sess.inf[pid] = infState{kind: kindRef, msg: n, hash: s.contentHash(pk), created: m.Created}
			h.inflight = append(h.inflight, storedMessage(client, pk))
		}
	}

	for n := range b.msgs {
		if ms := s.msgs[n]; ms == nil || ms.refs == 0 {
			delete(s.msgs, n)
			ops = append(ops, del(bMessages, messageKey(n)))
		}
	}

	for topic, m := range b.retained {
		if m.expired(now) {
			ops = append(ops, del(bRetained, topic))
			continue
		}
		s.retained[topic] = s.retainedHash(m)
		h.retained = append(h.retained, storedMessage("", packetOf(m, delivery{QoS: m.QoS, Retain: true}, 0)))
	}
	s.handover = h
	return clients, ops
}

// msgState returns (making it) the state of a restored message.
func (s *Store) msgState(n uint64, m message) *msgState {
	ms := s.msgs[n]
	if ms == nil {
		pk := packetOf(m, delivery{}, 0)
		ms = &msgState{hash: s.contentHash(pk), created: m.Created}
		s.msgs[n] = ms
	}
	return ms
}

// sweep drops messages older than QueueExpiry from the queues of
// disconnected sessions, on disk and in Mochi's memory. It runs only when
// QueueExpiry is set, and writes only when a message expires.
func (s *Store) sweep() {
	defer close(s.sweepDone)
	t := time.NewTicker(min(max(s.opts.QueueExpiry/10, time.Second), time.Minute))
	defer t.Stop()
	for {
		select {
		case <-s.stopSweep:
			return
		case <-t.C:
			s.expireQueues()
		}
	}
}

func (s *Store) expireQueues() {
	limit := s.now().Add(-s.opts.QueueExpiry).Unix()
	s.mu.Lock()
	defer s.mu.Unlock()
	var ops []op
	for id, sess := range s.sessions {
		if sess.connected {
			continue
		}
		for pid, st := range sess.inf {
			if (st.kind != kindRef && st.kind != kindFull) || st.created >= limit {
				continue
			}
			if sess.client != nil {
				sess.client.State.Inflight.Delete(pid)
			}
			ops = append(ops, s.dropInflight(id, sess, pid)...)
		}
	}
	if len(ops) > 0 {
		s.w.enqueue(&change{ops: ops})
	}
}
