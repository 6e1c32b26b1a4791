package main

// Quiesced snapshots, as vSphere takes them: CreateSnapshot with quiesce asks VMware Tools in the
// guest to flush its file systems first, so a VM whose Tools are not running gets a failed task
// (ToolsUnavailable). What each VM was asked is kept, for tests to read: GET /snapshots/created?vm=
// lists every snapshot created (name, quiesced) in order. POST /guest/tools {"vm", "running"} starts or
// stops a VM's Tools (the simulator's own VMs have none running).

import (
	"encoding/json"
	"fmt"
	"net/http"

	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/methods"
	"github.com/vmware/govmomi/vim25/types"
)

type createdSnapshot struct {
	Name     string `json:"name"`
	Quiesced bool   `json:"quiesced"`
}

// createSnapshot answers a CreateSnapshot_Task itself when vSphere would refuse it (quiesce without
// Tools): true if it answered. Otherwise it records the creation and leaves the call to the simulator.
func (w *warm) createSnapshot(rw http.ResponseWriter, method *simulator.Method) bool {
	req, ok := method.Body.(*types.CreateSnapshot_Task)
	if !ok {
		return false
	}
	vm, ok := simulator.Map.Get(req.This).(*simulator.VirtualMachine)
	if !ok {
		return false
	}
	var name, tools string
	simulator.Map.WithLock(vm, func() {
		name, tools = vm.Name, vm.Guest.ToolsRunningStatus
	})
	if req.Quiesce && tools != string(types.VirtualMachineToolsRunningStatusGuestToolsRunning) {
		task := simulator.CreateTask(vm, "createSnapshot", func(*simulator.Task) (types.AnyType, types.BaseMethodFault) {
			return nil, &types.ToolsUnavailable{}
		})
		ref := task.Run()
		simulator.Map.Update(task, []types.PropertyChange{{Name: "info.error", Val: types.LocalizedMethodFault{
			Fault:            &types.ToolsUnavailable{},
			LocalizedMessage: "Cannot complete operation because VMware Tools is not running in this virtual machine.",
		}}})
		writeSOAP(rw, &methods.CreateSnapshot_TaskBody{Res: &types.CreateSnapshot_TaskResponse{Returnval: ref}})
		return true
	}
	w.mu.Lock()
	w.created[name] = append(w.created[name], createdSnapshot{Name: req.Name, Quiesced: req.Quiesce})
	w.mu.Unlock()
	return false
}

func (w *warm) snapshotsCreated(rw http.ResponseWriter, r *http.Request) {
	w.mu.Lock()
	list := append([]createdSnapshot{}, w.created[r.URL.Query().Get("vm")]...)
	w.mu.Unlock()
	rw.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(rw).Encode(list)
}

func (w *warm) guestTools(rw http.ResponseWriter, r *http.Request) {
	var req struct {
		VM      string `json:"vm"`
		Running bool   `json:"running"`
	}
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		http.Error(rw, "bad JSON: "+err.Error(), http.StatusBadRequest)
		return
	}
	v := findVMByName(req.VM)
	if v == nil {
		http.Error(rw, fmt.Sprintf("no VM named %q", req.VM), http.StatusNotFound)
		return
	}
	status, running := types.VirtualMachineToolsRunningStatusGuestToolsNotRunning, types.VirtualMachineToolsStatusToolsNotRunning
	if req.Running {
		status, running = types.VirtualMachineToolsRunningStatusGuestToolsRunning, types.VirtualMachineToolsStatusToolsOk
	}
	simulator.Map.WithLock(v.vm, func() {
		simulator.Map.Update(v.vm, []types.PropertyChange{
			{Name: "guest.toolsRunningStatus", Val: string(status)},
			{Name: "guest.toolsStatus", Val: running},
		})
	})
	rw.WriteHeader(http.StatusNoContent)
}
