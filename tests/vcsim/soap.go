package main

// The HTTP side of the warm-migration additions: QueryChangedDiskAreas answered here (the simulator's
// VirtualMachine has no such method), the calls that are stun points passed to the simulator and
// followed by warm.reconcile, /folder reads of locked flat files refused, and the guest writer.

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"encoding/xml"
	"fmt"
	"io/ioutil"
	"log"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strconv"
	"strings"

	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/methods"
	"github.com/vmware/govmomi/vim25/soap"
	"github.com/vmware/govmomi/vim25/types"
)

// followed: SOAP methods after which warm.reconcile looks at the VM again.
var followed = map[string]bool{
	"CreateSnapshot_Task": true, "RemoveSnapshot_Task": true, "RemoveAllSnapshots_Task": true,
	"PowerOnVM_Task": true, "PowerOffVM_Task": true, "ShutdownGuest": true, "ResetVM_Task": true,
	"SuspendVM_Task": true, "ReconfigVM_Task": true, "Destroy_Task": true, "UnregisterVM": true,
	"RevertToSnapshot_Task": true, "RevertToCurrentSnapshot_Task": true,
}

func (w *warm) handler(next http.Handler) http.Handler {
	return http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		switch {
		case r.URL.Path == "/guest/write" && r.Method == http.MethodPost:
			w.guestWrite(rw, r)
			return
		case r.URL.Path == "/guest/read" && r.Method == http.MethodGet:
			w.guestRead(rw, r)
			return
		case r.URL.Path == "/guest/tools" && r.Method == http.MethodPost:
			w.guestTools(rw, r)
			return
		case r.URL.Path == "/snapshots/created" && r.Method == http.MethodGet:
			w.snapshotsCreated(rw, r)
			return
		case r.URL.Path == "/sdk" && r.Method == http.MethodPost:
			w.sdk(rw, r, next)
			return
		case strings.HasPrefix(r.URL.Path, "/folder/") && (r.Method == http.MethodGet || r.Method == http.MethodHead):
			rel := strings.TrimPrefix(r.URL.Path, "/folder/")
			if vm, locked := w.locked(r.URL.Query().Get("dsName"), rel); locked {
				http.Error(rw, fmt.Sprintf("Cannot open %s: the file is locked by the running virtual machine %s "+
					"(power it off or take a snapshot to read its base disk)", rel, vm), http.StatusInternalServerError)
				return
			}
		}
		next.ServeHTTP(rw, r)
	})
}

func (w *warm) sdk(rw http.ResponseWriter, r *http.Request, next http.Handler) {
	body, err := ioutil.ReadAll(r.Body)
	_ = r.Body.Close()
	if err != nil {
		rw.WriteHeader(http.StatusBadRequest)
		return
	}
	r.Body = ioutil.NopCloser(bytes.NewReader(body))
	var method *simulator.Method
	if bytes.Contains(body, []byte("QueryChangedDiskAreas")) || containsFollowed(body) {
		method, _ = simulator.UnmarshalBody(types.TypeFunc(), body)
	}
	if method == nil {
		next.ServeHTTP(rw, r)
		return
	}
	if method.Name == "QueryChangedDiskAreas" {
		if probe := authorized(r, next); probe.Code != http.StatusOK {
			copyResponse(rw, probe) // the simulator's own NotAuthenticated fault
			return
		}
		req := method.Body.(*types.QueryChangedDiskAreas)
		res := &methods.QueryChangedDiskAreasBody{}
		if info, fault := w.query(req); fault != nil {
			res.Fault_ = fault
		} else {
			res.Res = &types.QueryChangedDiskAreasResponse{Returnval: *info}
		}
		writeSOAP(rw, res)
		return
	}
	if method.Name == "ReconfigVM_Task" && trackingRefused(method) {
		if probe := authorized(r, next); probe.Code != http.StatusOK {
			copyResponse(rw, probe)
			return
		}
		writeSOAP(rw, &methods.ReconfigVM_TaskBody{Fault_: fault("changed block tracking needs virtual hardware "+
			"version 7 or later", &types.NotSupported{})})
		return
	}
	if !followed[method.Name] {
		next.ServeHTTP(rw, r)
		return
	}
	if method.Name == "CreateSnapshot_Task" {
		if probe := authorized(r, next); probe.Code != http.StatusOK {
			copyResponse(rw, probe)
			return
		}
		if w.createSnapshot(rw, method) {
			return
		}
	}
	vmRef := method.This
	if vmRef.Type == "VirtualMachineSnapshot" {
		snap, ok := simulator.Map.Get(vmRef).(*simulator.VirtualMachineSnapshot)
		if !ok {
			next.ServeHTTP(rw, r)
			return
		}
		vmRef = snap.Vm
	}
	if vmRef.Type != "VirtualMachine" {
		next.ServeHTTP(rw, r)
		return
	}
	before := readVM(vmRef)
	rec := httptest.NewRecorder()
	next.ServeHTTP(rec, r)
	// Tasks run to the end before the simulator answers: the client sees the task once we are done.
	w.reconcile(vmRef, before, method.Name)
	copyResponse(rw, rec)
}

// trackingRefused: a reconfiguration turning Changed Block Tracking on for a VM whose virtual hardware
// is older than version 7 (vmx-04 ... vmx-06), which vSphere refuses.
func trackingRefused(method *simulator.Method) bool {
	req, ok := method.Body.(*types.ReconfigVM_Task)
	if !ok || req.Spec.ChangeTrackingEnabled == nil || !*req.Spec.ChangeTrackingEnabled {
		return false
	}
	vm, ok := simulator.Map.Get(method.This).(*simulator.VirtualMachine)
	if !ok || vm.Config == nil {
		return false
	}
	var version int
	_, err := fmt.Sscanf(vm.Config.Version, "vmx-%d", &version)
	return err == nil && version < 7
}

func containsFollowed(body []byte) bool {
	for name := range followed {
		if bytes.Contains(body, []byte("<"+name)) || bytes.Contains(body, []byte(":"+name)) {
			return true
		}
	}
	return false
}

const currentTimeRequest = `<?xml version="1.0" encoding="UTF-8"?>
<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/"><soapenv:Body>` +
	`<CurrentTime xmlns="urn:vim25"><_this type="ServiceInstance">ServiceInstance</_this></CurrentTime>` +
	`</soapenv:Body></soapenv:Envelope>`

// authorized asks the simulator a call that needs a session, with the request's cookies.
func authorized(r *http.Request, next http.Handler) *httptest.ResponseRecorder {
	probe := httptest.NewRequest(http.MethodPost, "/sdk", strings.NewReader(currentTimeRequest))
	probe.Header = r.Header.Clone()
	probe.Header.Del("Content-Length")
	probe.ContentLength = int64(len(currentTimeRequest))
	rec := httptest.NewRecorder()
	next.ServeHTTP(rec, probe)
	return rec
}

func copyResponse(rw http.ResponseWriter, rec *httptest.ResponseRecorder) {
	for k, v := range rec.Header() {
		rw.Header()[k] = v
	}
	rw.WriteHeader(rec.Code)
	_, _ = rw.Write(rec.Body.Bytes())
}

func fault(msg string, f types.BaseMethodFault) *soap.Fault {
	return simulator.Fault(msg, f)
}

// query answers QueryChangedDiskAreas (see main.go's header).
func (w *warm) query(req *types.QueryChangedDiskAreas) (*types.DiskChangeInfo, *soap.Fault) {
	w.mu.Lock()
	defer w.mu.Unlock()
	v := readVM(req.This)
	if v == nil {
		return nil, fault(fmt.Sprintf("managed object not found: %s", req.This), &types.ManagedObjectNotFound{Obj: req.This})
	}
	st := w.state(req.This)
	w.syncTracking(st, v)
	var dev *diskDev
	for i := range v.disks {
		if v.disks[i].key == req.DeviceKey {
			dev = &v.disks[i]
		}
	}
	if dev == nil {
		return nil, fault(fmt.Sprintf("no virtual disk has the device key %d", req.DeviceKey),
			&types.InvalidArgument{InvalidProperty: "deviceKey"})
	}
	fileFault := func(msg string) *soap.Fault {
		return fault(msg, &types.FileFault{File: dev.fileName})
	}
	track := st.disks[dev.key]
	if track == nil || track.seq == 0 {
		return nil, fileFault(fmt.Sprintf("change tracking is not active on %s (enable it, then a snapshot or "+
			"a power on/off starts it)", dev.fileName))
	}
	var target *record
	if req.Snapshot != nil {
		snap, ok := simulator.Map.Get(*req.Snapshot).(*simulator.VirtualMachineSnapshot)
		if !ok {
			return nil, fault(fmt.Sprintf("managed object not found: %s", *req.Snapshot),
				&types.ManagedObjectNotFound{Obj: *req.Snapshot})
		}
		if snap.Vm != req.This {
			return nil, fault(fmt.Sprintf("snapshot %s is not a snapshot of %s", req.Snapshot.Value, v.name),
				&types.InvalidArgument{InvalidProperty: "snapshot"})
		}
		for _, layer := range st.chain {
			if layer.snapshot == *req.Snapshot {
				target = layer.state[dev.key]
			}
		}
		if target == nil {
			return nil, fileFault(fmt.Sprintf("no record of %s as of snapshot %s", dev.fileName, req.Snapshot.Value))
		}
	} else {
		if v.power != types.VirtualMachinePowerStatePoweredOff {
			return nil, fault(fmt.Sprintf("%s is %s: a query without a snapshot needs it powered off", v.name, v.power),
				&types.InvalidPowerState{RequestedState: types.VirtualMachinePowerStatePoweredOff, ExistingState: v.power})
		}
		// Off, the disk has not changed since its last stun (its power-off): answered from that record,
		// as vSphere answers from its tracking bitmap, not by reading the disk.
		target = track.records[track.seq]
		if target == nil || len(st.chain) > 0 {
			rec, err := w.files(st, v, *dev).record(len(st.chain))
			if err != nil {
				return nil, fileFault(fmt.Sprintf("reading %s: %v", dev.fileName, err))
			}
			target = rec
		}
	}
	if req.StartOffset < 0 || req.StartOffset >= dev.capacity {
		return nil, fault(fmt.Sprintf("startOffset %d is outside the disk (capacity %d)", req.StartOffset, dev.capacity),
			&types.InvalidArgument{InvalidProperty: "startOffset"})
	}
	changed := func(i int) bool { return target.nonzero[i] }
	if req.ChangeId != "*" {
		uuid, seq, ok := parseChangeID(req.ChangeId)
		if !ok || uuid != track.uuid || track.records[seq] == nil {
			return nil, fileFault(fmt.Sprintf("changeId %q is not known for %s (its tracking is %s/%d): "+
				"read the whole disk", req.ChangeId, dev.fileName, track.uuid, track.seq))
		}
		since := track.records[seq]
		changed = func(i int) bool {
			if i >= len(since.hashes) {
				return target.nonzero[i]
			}
			return since.hashes[i] != target.hashes[i] || since.nonzero[i] != target.nonzero[i]
		}
	}
	info := &types.DiskChangeInfo{StartOffset: req.StartOffset, Length: dev.capacity - req.StartOffset}
	for i := int(req.StartOffset / blockSize); i < len(target.hashes); i++ {
		if !changed(i) {
			continue
		}
		start, end := int64(i)*blockSize, int64(i+1)*blockSize
		if start < req.StartOffset {
			start = req.StartOffset
		}
		if end > dev.capacity {
			end = dev.capacity
		}
		if start >= end {
			continue
		}
		if n := len(info.ChangedArea); n > 0 && info.ChangedArea[n-1].Start+info.ChangedArea[n-1].Length == start {
			info.ChangedArea[n-1].Length = end - info.ChangedArea[n-1].Start
			continue
		}
		if len(info.ChangedArea) == w.maxExtents {
			last := info.ChangedArea[len(info.ChangedArea)-1]
			info.Length = last.Start + last.Length - req.StartOffset
			break
		}
		info.ChangedArea = append(info.ChangedArea, types.DiskChangeExtent{Start: start, Length: end - start})
	}
	return info, nil
}

// ---- SOAP encoding, as the simulator's ServeSDK does it ------------------------------------------

type soapEnvelope struct {
	XMLName xml.Name    `xml:"soapenv:Envelope"`
	Enc     string      `xml:"xmlns:soapenc,attr"`
	Env     string      `xml:"xmlns:soapenv,attr"`
	XSD     string      `xml:"xmlns:xsd,attr"`
	XSI     string      `xml:"xmlns:xsi,attr"`
	Body    interface{} `xml:"soapenv:Body"`
}

type faultDetail struct {
	Fault types.AnyType
}

type soapFault struct {
	XMLName xml.Name `xml:"soapenv:Fault"`
	Code    string   `xml:"faultcode"`
	String  string   `xml:"faultstring"`
	Detail  struct {
		Fault *faultDetail
	} `xml:"detail"`
}

func (d *faultDetail) MarshalXML(e *xml.Encoder, start xml.StartElement) error {
	kind := reflect.TypeOf(d.Fault).Elem().Name()
	start.Name.Local = kind + "Fault"
	start.Attr = append(start.Attr,
		xml.Attr{Name: xml.Name{Local: "xmlns"}, Value: "urn:vim25"},
		xml.Attr{Name: xml.Name{Local: "xsi:type"}, Value: kind})
	return e.EncodeElement(d.Fault, start)
}

type response struct {
	Body soap.HasFault
}

func (r *response) MarshalXML(e *xml.Encoder, start xml.StartElement) error {
	val := reflect.ValueOf(r.Body).Elem().FieldByName("Res")
	res := xml.StartElement{Name: xml.Name{Space: "urn:vim25", Local: val.Elem().Type().Name()}}
	if err := e.EncodeToken(start); err != nil {
		return err
	}
	if err := e.EncodeElement(val.Interface(), res); err != nil {
		return err
	}
	return e.EncodeToken(start.End())
}

func writeSOAP(rw http.ResponseWriter, res soap.HasFault) {
	var body interface{}
	status := http.StatusOK
	if f := res.Fault(); f != nil {
		status = http.StatusInternalServerError
		sf := &soapFault{Code: f.Code, String: f.String}
		sf.Detail.Fault = &faultDetail{f.Detail.Fault}
		body = struct{ Fault *soapFault }{sf}
	} else {
		body = &response{res}
	}
	var out bytes.Buffer
	out.WriteString(xml.Header)
	e := xml.NewEncoder(&out)
	if err := e.Encode(&soapEnvelope{
		Enc: "http://schemas.xmlsoap.org/soap/encoding/", Env: "http://schemas.xmlsoap.org/soap/envelope/",
		XSD: "http://www.w3.org/2001/XMLSchema", XSI: "http://www.w3.org/2001/XMLSchema-instance", Body: body,
	}); err != nil {
		log.Printf("warm: encoding a SOAP answer: %v", err)
		rw.WriteHeader(http.StatusInternalServerError)
		return
	}
	rw.Header().Set("Content-Type", "text/xml; charset=utf-8")
	rw.WriteHeader(status)
	_, _ = rw.Write(out.Bytes())
}

// ---- the guest writer ----------------------------------------------------------------------------

// guestPattern: the bytes a write with this seed puts: SHA-256("vcsim-guest" | seed | i), i = 0, 1, ...
// (8-byte little-endian numbers), concatenated.
func guestPattern(seed uint64, length int) []byte {
	out := make([]byte, 0, length+32)
	var in [11 + 16]byte
	copy(in[:], "vcsim-guest")
	binary.LittleEndian.PutUint64(in[11:], seed)
	for i := uint64(0); len(out) < length; i++ {
		binary.LittleEndian.PutUint64(in[19:], i)
		sum := sha256.Sum256(in[:])
		out = append(out, sum[:]...)
	}
	return out[:length]
}

type guestWriteRequest struct {
	VM     string  `json:"vm"`
	Disk   int     `json:"disk"`
	Offset int64   `json:"offset"`
	Length int64   `json:"length"`
	Byte   *int    `json:"byte"`
	Seed   *uint64 `json:"seed"`
}

func (w *warm) guestDisk(rw http.ResponseWriter, name string, index int) (*vmView, *diskDev) {
	v := findVMByName(name)
	if v == nil {
		http.Error(rw, fmt.Sprintf("no VM named %q", name), http.StatusNotFound)
		return nil, nil
	}
	if index < 0 || index >= len(v.disks) {
		http.Error(rw, fmt.Sprintf("%s has %d disks: no disk %d", name, len(v.disks), index), http.StatusNotFound)
		return nil, nil
	}
	return v, &v.disks[index]
}

func (w *warm) guestWrite(rw http.ResponseWriter, r *http.Request) {
	var req guestWriteRequest
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		http.Error(rw, "bad JSON: "+err.Error(), http.StatusBadRequest)
		return
	}
	if (req.Byte == nil) == (req.Seed == nil) {
		http.Error(rw, "give exactly one of byte and seed", http.StatusBadRequest)
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	v, d := w.guestDisk(rw, req.VM, req.Disk)
	if v == nil {
		return
	}
	if v.power != types.VirtualMachinePowerStatePoweredOn {
		http.Error(rw, fmt.Sprintf("%s is %s: only a running guest writes", v.name, v.power), http.StatusConflict)
		return
	}
	if req.Offset < 0 || req.Length <= 0 || req.Offset+req.Length > d.capacity || d.flat == "" {
		http.Error(rw, fmt.Sprintf("cannot write %d bytes at %d on %s (capacity %d)", req.Length, req.Offset,
			d.fileName, d.capacity), http.StatusBadRequest)
		return
	}
	var data []byte
	if req.Seed != nil {
		data = guestPattern(*req.Seed, int(req.Length))
	} else {
		data = bytes.Repeat([]byte{byte(*req.Byte)}, int(req.Length))
	}
	if err := w.files(w.state(v.ref), v, *d).write(data, req.Offset); err != nil {
		http.Error(rw, err.Error(), http.StatusInternalServerError)
		return
	}
	rw.WriteHeader(http.StatusNoContent)
}

func (w *warm) guestRead(rw http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	index, err1 := strconv.Atoi(q.Get("disk"))
	offset, err2 := strconv.ParseInt(q.Get("offset"), 10, 64)
	length, err3 := strconv.ParseInt(q.Get("length"), 10, 64)
	if err1 != nil || err2 != nil || err3 != nil {
		http.Error(rw, "vm, disk, offset and length are required", http.StatusBadRequest)
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	v, d := w.guestDisk(rw, q.Get("vm"), index)
	if v == nil {
		return
	}
	if offset < 0 || length < 0 || offset+length > d.capacity {
		http.Error(rw, fmt.Sprintf("range outside the disk (capacity %d)", d.capacity), http.StatusBadRequest)
		return
	}
	out := make([]byte, length)
	if err := w.files(w.state(v.ref), v, *d).read(out, offset); err != nil {
		http.Error(rw, err.Error(), http.StatusInternalServerError)
		return
	}
	rw.Header().Set("Content-Type", "application/octet-stream")
	_, _ = rw.Write(out)
}
