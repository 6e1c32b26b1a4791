// Command vcsim runs govmomi's vCenter simulator for hypersdk's integration tests.
//
// It builds the VPX model (datacenter DC0, standalone host DC0_H0, cluster DC0_C0,
// datastore LocalDS_0, distributed portgroup DC0_DVPG0), listens on a loopback
// port (HTTPS with a throw-away CA and server certificate, or plain HTTP with
// -http), prints one JSON line describing itself on stdout (URL, credentials,
// datastore directories, certificate thumbprints and PEMs), and serves until
// SIGTERM/SIGINT, until its stdin closes, or until its parent dies.
//
// GET /served answers, as JSON, the bytes each datastore file's GET responses under /folder/ sent
// ({"/folder/vm/vm-flat.vmdk": 268435456}): what a client really read, rereads included.
//
// Only -username/-password log in: the simulator's default accepts any
// non-empty credentials.
//
// Warm migration (warm.go, disks.go, soap.go), as vSphere does it (docs/vsphere-cbt-facts.md):
//
//   - Changed Block Tracking. ReconfigVM with changeTrackingEnabled (stored by the simulator) gives
//     each virtual disk a new tracking uuid; its backing.changeId is "<uuid>/<seq>" in vSphere's shape,
//     "52 de c0 d9 b9 43 9d 10-61 d5 4c 1b e9 7b 65 63/3", and stays "" until the next stun point,
//     whatever the power state. Stun points: snapshot create, snapshot remove (RemoveSnapshot_Task,
//     RemoveAllSnapshots_Task), any power state change (PowerOnVM_Task, PowerOffVM_Task, ShutdownGuest,
//     SuspendVM_Task) and ResetVM_Task. Each gives every tracked disk seq+1 and records the disk's
//     content then (a CRC-64 and a non-zero bit per 64 KiB block). Disabling forgets the uuid and the
//     records: after enabling again, older changeIds are a FileFault.
//   - Snapshots. govmomi 0.24 stores in a snapshot's config a shallow copy of the VM's config (device
//     objects shared with the VM): at creation the snapshot gets disks of its own whose
//     backing.changeId is the one issued at its stun point (the VM's disks get the same id).
//     Snapshots form a chain (nested ones work; reverting restores no disk content). While one exists
//     the base -flat.vmdk is frozen: the guest's writes go to the newest snapshot's delta, a sparse raw
//     file at the disk's offsets in a private directory (not on the datastore) plus the set of 64 KiB
//     blocks it holds (copy on write from the layers below). Removing a snapshot writes the delta that
//     follows it into its parent (the previous delta, or the base file for the first snapshot).
//   - QueryChangedDiskAreas(_this=vm, snapshot, deviceKey, startOffset, changeId) is answered here,
//     before the simulator (which lacks it), after checking the session with the simulator: extents in
//     whole 64 KiB blocks (the last one cut at the capacity, the first at startOffset), adjacent ones
//     merged, at most -cbt-max-extents (2000) per answer, whose length then ends with the last extent
//     (else it reaches the capacity); call again from startOffset+length. changeId "*": the blocks
//     holding non-zero data; otherwise the blocks whose content differs from the record of that
//     changeId (a block rewritten with the same bytes is not listed, unlike vSphere). As of the
//     snapshot given (its record), or of now when none is given (a powered-off VM: the record of its
//     power-off, as vSphere answers from its bitmap; a file changed behind the simulator's back while
//     the VM is off is not seen). Faults: unknown VM or snapshot
//     ManagedObjectNotFound; deviceKey not a disk, startOffset < 0 or >= capacity, a snapshot of
//     another VM InvalidArgument (invalidProperty names it); tracking off or not active yet, a changeId
//     of another uuid or an unknown seq FileFault (file: the disk's descriptor); no snapshot while
//     the VM is not powered off InvalidPowerState.
//   - ReconfigVM turning changeTrackingEnabled on for a VM of virtual hardware older than vmx-07 is
//     refused with NotSupported, as vSphere refuses it.
//   - Locks. GET and HEAD under /folder/ of the -flat.vmdk of a powered-on VM with no snapshot answer
//     500 with a body saying it is locked; with a snapshot they read the frozen base. The model's own
//     VMs (DC0_H0_VM0...) are exempt unless -lock-builtin-vms (existing tests read them while on).
//   - POST /guest/write {"vm": name, "disk": index, "offset", "length", "byte": 0-255 | "seed": n}: the
//     running guest writes (204; 409 when the VM is not powered on; 404 no such VM or disk; 400 outside
//     the disk). Seeded bytes: SHA-256("vcsim-guest" | seed | i), 8-byte little-endian numbers,
//     concatenated. Into the base with no snapshot, else into the newest delta. GET
//     /guest/read?vm=&disk=&offset=&length= answers the guest's view (base + deltas).
//   - ShutdownGuest in govmomi 0.24 powers the VM off at once (a stun point); PowerOnVM_Task powers on.
//
// Build: GOPATH=/usr/share/gocode GO111MODULE=off go build -o vcsim .
package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"flag"
	"fmt"
	"io"
	"io/ioutil"
	"log"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/vmware/govmomi/simulator"
)

type info struct {
	URL              string            `json:"url"`
	Scheme           string            `json:"scheme"`
	Host             string            `json:"host"`
	Port             int               `json:"port"`
	Username         string            `json:"username"`
	Password         string            `json:"password"`
	DatastoreDir     string            `json:"datastore_dir"`
	Datastores       map[string]string `json:"datastores"`
	ThumbprintSHA1   string            `json:"thumbprint_sha1,omitempty"`
	ThumbprintSHA256 string            `json:"thumbprint_sha256,omitempty"`
	CertificatePEM   string            `json:"certificate_pem,omitempty"`
	CAPEM            string            `json:"ca_pem,omitempty"`
	PID              int               `json:"pid"`
}

func thumbprint(sum []byte) string {
	parts := make([]string, len(sum))
	for i, b := range sum {
		parts[i] = fmt.Sprintf("%02X", b)
	}
	return strings.Join(parts, ":")
}

// dieWithParent asks the kernel to SIGTERM us when our parent exits, then
// closes the race where the parent died before the prctl call.
func dieWithParent(expectedParent int) {
	_, _, errno := syscall.RawSyscall(syscall.SYS_PRCTL, syscall.PR_SET_PDEATHSIG, uintptr(syscall.SIGTERM), 0)
	if errno != 0 {
		log.Printf("prctl(PR_SET_PDEATHSIG): %v", errno)
	}
	if expectedParent > 0 && os.Getppid() != expectedParent {
		log.Printf("parent %d already gone", expectedParent)
		os.Exit(1)
	}
}

// newCertificate makes a throw-away CA and a server certificate it signs, for
// 127.0.0.1, ::1 and localhost. Both use ECDSA P-256: the simulator's built-in
// certificate is RSA-1024, which OpenSSL's default security level rejects, so a
// client could not verify it even when told to trust it.
func newCertificate() (tls.Certificate, []byte, error) {
	notBefore := time.Now().Add(-time.Hour)
	notAfter := notBefore.Add(10 * 365 * 24 * time.Hour)
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	ca := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "hypersdk vcsim test CA"},
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, ca, ca, &caKey.PublicKey, caKey)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	ca, _ = x509.ParseCertificate(caDER)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	leaf := &x509.Certificate{
		SerialNumber:          big.NewInt(2),
		Subject:               pkix.Name{CommonName: "localhost"},
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		DNSNames:              []string{"localhost"},
		IPAddresses:           []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP("::1")},
	}
	der, err := x509.CreateCertificate(rand.Reader, leaf, ca, &key.PublicKey, caKey)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	pair := tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
	return pair, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}), nil
}

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "address to listen on (port 0: a free port)")
	plainHTTP := flag.Bool("http", false, "serve plain HTTP instead of HTTPS")
	username := flag.String("username", "user", "the only accepted login user name")
	password := flag.String("password", "pass", "the only accepted login password")
	hosts := flag.Int("standalone-host", 1, "standalone hosts per datacenter")
	clusters := flag.Int("cluster", 1, "clusters per datacenter")
	clusterHosts := flag.Int("host", 3, "hosts per cluster")
	vms := flag.Int("vm", 2, "VMs per host / resource pool")
	datastores := flag.Int("ds", 1, "datastores")
	portgroups := flag.Int("pg", 1, "distributed portgroups per datacenter")
	folders := flag.Int("folder", 0, "datacenters placed inside a folder")
	parentPID := flag.Int("parent-pid", 0, "exit at once if our parent is not this pid (with -exit-with-parent)")
	exitWithParent := flag.Bool("exit-with-parent", true, "exit when the parent process dies (prctl PDEATHSIG)")
	exitOnStdinEOF := flag.Bool("exit-on-stdin-eof", true, "exit when stdin is closed")
	maxExtents := flag.Int("cbt-max-extents", 2000, "at most this many extents in one QueryChangedDiskAreas answer "+
		"(its length then ends with the last one: the client asks again from there)")
	lockBuiltin := flag.Bool("lock-builtin-vms", false, "also refuse /folder reads of the flat disks of the model's own "+
		"powered-on VMs (DC0_H0_VM0...) while they have no snapshot, as for every VM created later")
	streamRate := flag.Int64("stream-rate", 0, "hold each /folder GET response to this many bytes per second, "+
		"as one datastore stream of a real host (0: as fast as the CPU allows)")
	flag.Parse()

	log.SetFlags(log.LstdFlags | log.Lmicroseconds)
	log.SetOutput(os.Stderr)

	if *exitWithParent {
		// PDEATHSIG belongs to the calling thread: keep main on it for good.
		runtime.LockOSThread()
		dieWithParent(*parentPID)
	}

	model := simulator.VPX()
	model.Host = *hosts
	model.Cluster = *clusters
	model.ClusterHost = *clusterHosts
	model.Machine = *vms
	model.Datastore = *datastores
	model.Portgroup = *portgroups
	model.Folder = *folders

	if err := model.Create(); err != nil {
		log.Fatalf("model.Create: %v", err)
	}
	defer model.Remove()

	model.Service.Listen = &url.URL{Host: *listen, User: url.UserPassword(*username, *password)}
	var caPEM []byte
	if !*plainHTTP {
		pair, ca, err := newCertificate()
		if err != nil {
			log.Fatalf("certificate: %v", err)
		}
		caPEM = ca
		model.Service.TLS = &tls.Config{Certificates: []tls.Certificate{pair}}
	}
	deltaDir, err := ioutil.TempDir("", "vcsim-deltas-")
	if err != nil {
		log.Fatalf("delta directory: %v", err)
	}
	defer os.RemoveAll(deltaDir)
	warmState := newWarm(deltaDir, *maxExtents, *lockBuiltin)

	server := model.Service.NewServer()
	// Go reads the handler per request: wrapping it now covers every request to come. The warm
	// handler is outside the counting one: a refused read of a locked file sent no disk bytes.
	server.Config.Handler = warmState.handler(
		datastoreReads(server.Config.Handler, &servedBytes{files: map[string]int64{}}, *streamRate))

	host, portText, _ := net.SplitHostPort(server.URL.Host)
	port, _ := strconv.Atoi(portText)
	u := *server.URL
	u.User = nil
	out := info{
		URL:        u.String(),
		Scheme:     u.Scheme,
		Host:       host,
		Port:       port,
		Username:   *username,
		Password:   *password,
		Datastores: map[string]string{},
		PID:        os.Getpid(),
	}
	for _, e := range simulator.Map.All("Datastore") {
		ds := e.(*simulator.Datastore)
		out.Datastores[ds.Name] = ds.Info.GetDatastoreInfo().Url
	}
	out.DatastoreDir = out.Datastores["LocalDS_0"]
	if !*plainHTTP {
		cert := server.Certificate()
		s1 := sha1.Sum(cert.Raw)
		s256 := sha256.Sum256(cert.Raw)
		out.ThumbprintSHA1 = thumbprint(s1[:])
		out.ThumbprintSHA256 = thumbprint(s256[:])
		out.CertificatePEM = string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw}))
		out.CAPEM = string(caPEM)
	}

	line, err := json.Marshal(out)
	if err != nil {
		log.Fatalf("json: %v", err)
	}
	os.Stdout.Write(append(line, '\n'))

	stop := make(chan string, 3)
	signals := make(chan os.Signal, 2)
	signal.Notify(signals, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	go func() { stop <- (<-signals).String() }()
	if *exitOnStdinEOF {
		go func() {
			_, _ = io.Copy(ioutil.Discard, os.Stdin)
			stop <- "stdin closed"
		}()
	}

	reason := <-stop
	log.Printf("stopping: %s", reason)

	// Close waits for requests in flight: bound it so a stuck client can't keep us alive.
	closed := make(chan struct{})
	go func() {
		server.Close()
		close(closed)
	}()
	select {
	case <-closed:
	case <-time.After(3 * time.Second):
		log.Printf("server did not close within 3s; exiting anyway")
	}
}

// datastoreReads counts the body bytes of each GET under /folder/ per file (GET /served answers
// them) and, with a rate above 0, holds each response to that many bytes per second, each
// response on its own (parallel ranges multiply the total, as on a real host).
func datastoreReads(next http.Handler, served *servedBytes, rate int64) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/served" {
			served.answer(w)
			return
		}
		if r.Method == http.MethodGet && strings.HasPrefix(r.URL.Path, "/folder/") {
			w = &countingWriter{ResponseWriter: w, served: served, file: r.URL.Path}
			if rate > 0 {
				w = &pacedWriter{ResponseWriter: w, rate: rate, start: time.Now()}
			}
		}
		next.ServeHTTP(w, r)
	})
}

// servedBytes: body bytes sent per datastore file (URL path, without the query).
type servedBytes struct {
	mu    sync.Mutex
	files map[string]int64
}

func (s *servedBytes) add(file string, n int64) {
	s.mu.Lock()
	s.files[file] += n
	s.mu.Unlock()
}

func (s *servedBytes) answer(w http.ResponseWriter) {
	s.mu.Lock()
	body, err := json.Marshal(s.files)
	s.mu.Unlock()
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Write(body)
}

// countingWriter adds what the connection took of a response body (a write cut short by a client
// that went away counts what was sent of it).
type countingWriter struct {
	http.ResponseWriter
	served *servedBytes
	file   string
}

func (c *countingWriter) Write(b []byte) (int, error) {
	n, err := c.ResponseWriter.Write(b)
	c.served.add(c.file, int64(n))
	return n, err
}

type pacedWriter struct {
	http.ResponseWriter
	rate  int64
	start time.Time
	sent  int64
}

func (p *pacedWriter) Write(b []byte) (int, error) {
	written := 0
	for len(b) > 0 {
		n := len(b)
		if n > 64*1024 {
			n = 64 * 1024
		}
		// sleep until the bytes sent so far are due at the rate
		due := p.start.Add(time.Duration(float64(p.sent+int64(n)) / float64(p.rate) * float64(time.Second)))
		if wait := time.Until(due); wait > 0 {
			time.Sleep(wait)
		}
		m, err := p.ResponseWriter.Write(b[:n])
		written += m
		p.sent += int64(m)
		if err != nil {
			return written, err
		}
		b = b[n:]
	}
	return written, nil
}
