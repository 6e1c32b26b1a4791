package main

// Warm-migration state kept beside govmomi's simulator: Changed Block Tracking per disk (a tracking
// uuid, a sequence number per stun point, a block record at each), the chain of deltas of a VM's
// snapshots, and the answer to QueryChangedDiskAreas. See the header of main.go for the behaviour.

import (
	"crypto/rand"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/types"
)

type warm struct {
	mu          sync.Mutex
	deltaDir    string // private directory of the delta files
	maxExtents  int
	lockBuiltin bool
	builtin     map[types.ManagedObjectReference]bool // the model's own VMs (see -lock-builtin-vms)
	vms         map[types.ManagedObjectReference]*vmState
	created     map[string][]createdSnapshot // by VM name: every snapshot created (quiesce.go)
}

type vmState struct {
	disks map[int32]*diskTrack // device key -> CBT state (only while CBT is enabled)
	chain []*snapLayer         // one per snapshot, oldest first
}

// diskTrack: CBT of one disk. seq 0: enabled but not active yet (no changeId until the next stun).
type diskTrack struct {
	uuid    string
	seq     int
	records map[int]*record
}

// snapLayer: a snapshot, the disks' content as of it, and the delta of what came after it.
type snapLayer struct {
	snapshot types.ManagedObjectReference
	state    map[int32]*record
	deltas   map[int32]*delta
}

// vmView: what we need of a simulator VM, read under its lock.
type vmView struct {
	ref       types.ManagedObjectReference
	vm        *simulator.VirtualMachine
	name      string
	power     types.VirtualMachinePowerState
	cbt       bool
	disks     []diskDev
	snapshots []types.ManagedObjectReference // snapshot tree, depth first
}

type diskDev struct {
	key      int32
	fileName string // "[LocalDS_0] vm/vm.vmdk"
	flat     string // the -flat.vmdk on the local file system ("" when the datastore is unknown)
	capacity int64
}

func newWarm(deltaDir string, maxExtents int, lockBuiltin bool) *warm {
	w := &warm{
		deltaDir: deltaDir, maxExtents: maxExtents, lockBuiltin: lockBuiltin,
		builtin: map[types.ManagedObjectReference]bool{}, vms: map[types.ManagedObjectReference]*vmState{},
		created: map[string][]createdSnapshot{},
	}
	for _, e := range simulator.Map.All("VirtualMachine") {
		w.builtin[e.Reference()] = true
	}
	return w
}

func newTrackingUUID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	parts := make([]string, 16)
	for i, c := range b {
		parts[i] = fmt.Sprintf("%02x", c)
	}
	return strings.Join(parts[:8], " ") + "-" + strings.Join(parts[8:], " ")
}

func (t *diskTrack) changeID() string {
	if t == nil || t.seq == 0 {
		return ""
	}
	return fmt.Sprintf("%s/%d", t.uuid, t.seq)
}

func parseChangeID(id string) (string, int, bool) {
	i := strings.LastIndex(id, "/")
	if i < 0 {
		return "", 0, false
	}
	seq, err := strconv.Atoi(id[i+1:])
	return id[:i], seq, err == nil
}

func datastoreDir(name string) string {
	for _, e := range simulator.Map.All("Datastore") {
		if ds := e.(*simulator.Datastore); ds.Name == name {
			return ds.Info.GetDatastoreInfo().Url
		}
	}
	return ""
}

func diskBacking(d *types.VirtualDisk) (fileName, changeID string) {
	switch b := d.Backing.(type) {
	case *types.VirtualDiskFlatVer2BackingInfo:
		return b.FileName, b.ChangeId
	case *types.VirtualDiskSparseVer2BackingInfo:
		return b.FileName, b.ChangeId
	case *types.VirtualDiskSeSparseBackingInfo:
		return b.FileName, b.ChangeId
	case *types.VirtualDiskRawDiskMappingVer1BackingInfo:
		return b.FileName, b.ChangeId
	}
	return "", ""
}

// withChangeID: a copy of the disk and of its backing, carrying changeID (the original is untouched:
// govmomi's snapshots share device objects with their VM).
func withChangeID(d *types.VirtualDisk, changeID string) *types.VirtualDisk {
	c := *d
	switch b := d.Backing.(type) {
	case *types.VirtualDiskFlatVer2BackingInfo:
		nb := *b
		nb.ChangeId = changeID
		c.Backing = &nb
	case *types.VirtualDiskSparseVer2BackingInfo:
		nb := *b
		nb.ChangeId = changeID
		c.Backing = &nb
	case *types.VirtualDiskSeSparseBackingInfo:
		nb := *b
		nb.ChangeId = changeID
		c.Backing = &nb
	case *types.VirtualDiskRawDiskMappingVer1BackingInfo:
		nb := *b
		nb.ChangeId = changeID
		c.Backing = &nb
	}
	return &c
}

func flattenSnapshots(list []types.VirtualMachineSnapshotTree, out []types.ManagedObjectReference) []types.ManagedObjectReference {
	for _, s := range list {
		out = append(out, s.Snapshot)
		out = flattenSnapshots(s.ChildSnapshotList, out)
	}
	return out
}

// readVM: the VM behind ref, read under the simulator's lock of it (nil if there is none).
func readVM(ref types.ManagedObjectReference) *vmView {
	vm, ok := simulator.Map.Get(ref).(*simulator.VirtualMachine)
	if !ok {
		return nil
	}
	v := &vmView{ref: ref, vm: vm}
	simulator.Map.WithLock(vm, func() {
		v.name = vm.Name
		v.power = vm.Runtime.PowerState
		v.cbt = vm.Config != nil && vm.Config.ChangeTrackingEnabled != nil && *vm.Config.ChangeTrackingEnabled
		if vm.Snapshot != nil {
			v.snapshots = flattenSnapshots(vm.Snapshot.RootSnapshotList, nil)
		}
		if vm.Config == nil {
			return
		}
		for _, dev := range vm.Config.Hardware.Device {
			disk, ok := dev.(*types.VirtualDisk)
			if !ok {
				continue
			}
			fileName, _ := diskBacking(disk)
			d := diskDev{key: disk.Key, fileName: fileName, capacity: disk.CapacityInBytes}
			if d.capacity == 0 {
				d.capacity = disk.CapacityInKB * 1024
			}
			if strings.HasPrefix(fileName, "[") {
				if i := strings.Index(fileName, "] "); i > 0 {
					if dir := datastoreDir(fileName[1:i]); dir != "" {
						rel := strings.TrimSuffix(fileName[i+2:], ".vmdk") + "-flat.vmdk"
						d.flat = filepath.Join(dir, rel)
					}
				}
			}
			v.disks = append(v.disks, d)
		}
	})
	return v
}

func (w *warm) state(ref types.ManagedObjectReference) *vmState {
	st := w.vms[ref]
	if st == nil {
		st = &vmState{disks: map[int32]*diskTrack{}}
		w.vms[ref] = st
	}
	return st
}

func (w *warm) newDelta(vm types.ManagedObjectReference, snap types.ManagedObjectReference, key int32) *delta {
	name := fmt.Sprintf("%s-%d-%s.delta", vm.Value, key, snap.Value)
	return &delta{path: filepath.Join(w.deltaDir, name), dirty: map[int64]bool{}}
}

// files: the disk's base and deltas (a disk added after a snapshot gets empty deltas).
func (w *warm) files(st *vmState, v *vmView, d diskDev) *diskFiles {
	f := &diskFiles{base: d.flat, capacity: d.capacity}
	for _, layer := range st.chain {
		dl := layer.deltas[d.key]
		if dl == nil {
			dl = w.newDelta(v.ref, layer.snapshot, d.key)
			layer.deltas[d.key] = dl
		}
		f.deltas = append(f.deltas, dl)
	}
	return f
}

// syncTracking follows Config.ChangeTrackingEnabled: enabling gives each disk a new tracking uuid
// and no changeId yet; disabling forgets everything.
func (w *warm) syncTracking(st *vmState, v *vmView) {
	if !v.cbt {
		st.disks = map[int32]*diskTrack{}
		return
	}
	present := map[int32]bool{}
	for _, d := range v.disks {
		present[d.key] = true
		if st.disks[d.key] == nil {
			st.disks[d.key] = &diskTrack{uuid: newTrackingUUID(), records: map[int]*record{}}
		}
	}
	for key := range st.disks {
		if !present[key] {
			delete(st.disks, key)
		}
	}
}

// stun: a stun point. Each disk whose tracking is enabled gets a new sequence number and a record
// of its current content; with all, every disk's record is returned (a snapshot's state).
func (w *warm) stun(st *vmState, v *vmView, all bool) map[int32]*record {
	out := map[int32]*record{}
	for _, d := range v.disks {
		t := st.disks[d.key]
		if t == nil && !all {
			continue
		}
		rec, err := w.files(st, v, d).record(len(st.chain))
		if err != nil {
			log.Printf("warm: reading disk %d of %s: %v", d.key, v.name, err)
			continue
		}
		out[d.key] = rec
		if t != nil {
			t.seq++
			t.records[t.seq] = rec
		}
	}
	return out
}

// publishChangeIDs puts each disk's current changeId in the VM's backing (new device objects).
func (w *warm) publishChangeIDs(st *vmState, v *vmView) {
	simulator.Map.WithLock(v.vm, func() {
		if v.vm.Config == nil {
			return
		}
		devices := append([]types.BaseVirtualDevice(nil), v.vm.Config.Hardware.Device...)
		changed := false
		for i, dev := range devices {
			disk, ok := dev.(*types.VirtualDisk)
			if !ok {
				continue
			}
			want := st.disks[disk.Key].changeID()
			if _, have := diskBacking(disk); have != want {
				devices[i] = withChangeID(disk, want)
				changed = true
			}
		}
		if changed {
			simulator.Map.Update(v.vm, []types.PropertyChange{{Name: "config.hardware.device", Val: devices}})
		}
	})
}

// publishSnapshot gives a new snapshot disks of its own carrying the changeIds of its stun point.
func (w *warm) publishSnapshot(ref types.ManagedObjectReference, ids map[int32]string) {
	snap, ok := simulator.Map.Get(ref).(*simulator.VirtualMachineSnapshot)
	if !ok {
		return
	}
	simulator.Map.WithLock(snap, func() {
		devices := append([]types.BaseVirtualDevice(nil), snap.Config.Hardware.Device...)
		for i, dev := range devices {
			if disk, ok := dev.(*types.VirtualDisk); ok {
				devices[i] = withChangeID(disk, ids[disk.Key])
			}
		}
		snap.Config.Hardware.Device = devices
	})
}

// reconcile runs after the simulator answered a call on a VM (or one of its snapshots): follows
// CBT on/off, merges the deltas of removed snapshots, starts a delta for a new one, and takes a
// stun point for a snapshot create or remove and a power state change.
func (w *warm) reconcile(ref types.ManagedObjectReference, before *vmView, method string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	v := readVM(ref)
	if v == nil {
		w.forget(ref)
		return
	}
	st := w.state(ref)
	w.syncTracking(st, v)

	alive := map[types.ManagedObjectReference]bool{}
	for _, s := range v.snapshots {
		alive[s] = true
	}
	stunned := false
	for i := len(st.chain) - 1; i >= 0; i-- {
		if alive[st.chain[i].snapshot] {
			continue
		}
		for _, d := range v.disks {
			if err := w.files(st, v, d).merge(i); err != nil {
				log.Printf("warm: merging the delta of disk %d of %s: %v", d.key, v.name, err)
			}
		}
		for _, dl := range st.chain[i].deltas { // disks removed meanwhile
			_ = os.Remove(dl.path)
		}
		st.chain = append(st.chain[:i], st.chain[i+1:]...)
		stunned = true
	}
	known := map[types.ManagedObjectReference]bool{}
	for _, layer := range st.chain {
		known[layer.snapshot] = true
	}
	var created []types.ManagedObjectReference
	for _, s := range v.snapshots {
		if !known[s] {
			created = append(created, s)
		}
	}
	if (before != nil && before.power != v.power) || method == "ResetVM_Task" {
		stunned = true
	}
	if stunned && len(created) == 0 {
		w.stun(st, v, false)
	}
	for _, s := range created {
		state := w.stun(st, v, true)
		ids := map[int32]string{}
		for key, t := range st.disks {
			ids[key] = t.changeID()
		}
		layer := &snapLayer{snapshot: s, state: state, deltas: map[int32]*delta{}}
		for _, d := range v.disks {
			layer.deltas[d.key] = w.newDelta(ref, s, d.key)
		}
		st.chain = append(st.chain, layer)
		w.publishSnapshot(s, ids)
	}
	w.publishChangeIDs(st, v)
}

func (w *warm) forget(ref types.ManagedObjectReference) {
	if st := w.vms[ref]; st != nil {
		for _, layer := range st.chain {
			for _, dl := range layer.deltas {
				_ = os.Remove(dl.path)
			}
		}
	}
	delete(w.vms, ref)
}

// locked: a datastore file (URL path under /folder/, datastore name) that ESXi would refuse to read:
// the -flat.vmdk of a powered-on VM that has no snapshot.
func (w *warm) locked(dsName, rel string) (string, bool) {
	if !strings.HasSuffix(rel, "-flat.vmdk") {
		return "", false
	}
	descriptor := strings.TrimSuffix(rel, "-flat.vmdk") + ".vmdk"
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, e := range simulator.Map.All("VirtualMachine") {
		ref := e.Reference()
		if w.builtin[ref] && !w.lockBuiltin {
			continue
		}
		v := readVM(ref)
		if v == nil || v.power != types.VirtualMachinePowerStatePoweredOn {
			continue
		}
		for _, d := range v.disks {
			ds, path := "", d.fileName
			if i := strings.Index(path, "] "); strings.HasPrefix(path, "[") && i > 0 {
				ds, path = path[1:i], path[i+2:]
			}
			if path != descriptor || (dsName != "" && ds != dsName) {
				continue
			}
			if st := w.vms[ref]; st == nil || len(st.chain) == 0 {
				return v.name, true
			}
		}
	}
	return "", false
}

func findVMByName(name string) *vmView {
	for _, e := range simulator.Map.All("VirtualMachine") {
		if v := readVM(e.Reference()); v != nil && v.name == name {
			return v
		}
	}
	return nil
}
