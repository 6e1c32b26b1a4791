"""Small helpers around the PropertyCollector: build specs, retrieve in pages."""

from __future__ import annotations

from typing import Any, Iterable, Iterator, Optional, Sequence

from pyVmomi import vim, vmodl

from hypersdk.vsphere.connection import service_content

PC = vmodl.query.PropertyCollector
PAGE_SIZE = 500


def traversal(name: str, type_: type, path: str, *follow: str, skip: bool = False) -> PC.TraversalSpec:
    return PC.TraversalSpec(
        name=name, type=type_, path=path, skip=skip,
        selectSet=[PC.SelectionSpec(name=n) for n in follow],
    )


def ancestors_specs() -> list[PC.TraversalSpec]:
    """Walk from an entity up to the root folder (also out of vApps)."""
    return [
        traversal("up", vim.ManagedEntity, "parent", "up", "upVApp"),
        traversal("vmVApp", vim.VirtualMachine, "parentVApp", "up", "upVApp"),
        traversal("upVApp", vim.VirtualApp, "parentFolder", "up"),
    ]


def ancestors_select() -> list[PC.SelectionSpec]:
    return [PC.SelectionSpec(name="up"), PC.SelectionSpec(name="vmVApp")]


def prop(type_: type, *paths: str) -> PC.PropertySpec:
    return PC.PropertySpec(type=type_, pathSet=list(paths), all=False)


def thd_retrieve(
    si: vim.ServiceInstance,
    specs: Sequence[PC.FilterSpec],
    page_size: int = PAGE_SIZE,
    collector: Optional[vmodl.query.PropertyCollector] = None,
) -> Iterator[PC.ObjectContent]:
    """RetrievePropertiesEx, then ContinueRetrievePropertiesEx until the token runs out."""
    pc = collector or service_content(si).propertyCollector
    result = pc.RetrievePropertiesEx(list(specs), PC.RetrieveOptions(maxObjects=page_size))
    while result is not None:
        token = result.token
        try:
            yield from result.objects
        except GeneratorExit:
            if token:
                try:
                    pc.CancelRetrievePropertiesEx(token)
                except Exception:  # the result set times out on the server anyway
                    pass
            raise
        if not token:
            return
        result = pc.ContinueRetrievePropertiesEx(token)


def as_dict(content: PC.ObjectContent) -> dict[str, Any]:
    return {p.name: p.val for p in content.propSet}


def thd_properties(si: vim.ServiceInstance, obj: vim.ManagedEntity, *paths: str) -> dict[str, Any]:
    """Some properties of one object, in one call."""
    spec = PC.FilterSpec(objectSet=[PC.ObjectSpec(obj=obj, skip=False)], propSet=[prop(type(obj), *paths)])
    for content in thd_retrieve(si, [spec]):
        return as_dict(content)
    return {}


def by_ref(contents: Iterable[PC.ObjectContent]) -> dict[tuple[str, str], tuple[Any, dict[str, Any]]]:
    """{(type name, moid): (moref, properties)}: morefs from different calls compare by id."""
    return {ref_key(c.obj): (c.obj, as_dict(c)) for c in contents}


def ref_key(ref: Any) -> tuple[str, str]:
    return (ref._wsdlName, ref._moId)


def inventory_path(key: tuple[str, str], objects: dict[tuple[str, str], tuple[Any, dict[str, Any]]]) -> tuple[str, Optional[str]]:
    """(``"DC0/vm/folder/name"``, datacenter inventory path) from name/parent properties.

    The root folder is not part of inventory paths. A VM in a vApp hangs under
    the vApp's parent folder, as the vSphere client shows it.
    """
    names: list[str] = []
    datacenter_index: Optional[int] = None
    seen = set()
    current: Optional[tuple[str, str]] = key
    while current is not None and current not in seen:
        seen.add(current)
        entry = objects.get(current)
        if entry is None:
            break
        _ref, props = entry
        if current[0] == "VirtualApp":
            parent = props.get("parentFolder") or props.get("parent")
        else:
            parent = props.get("parent") or props.get("parentVApp")
        if parent is None:  # the root folder
            break
        names.append(props.get("name", ""))
        if current[0] == "Datacenter":
            datacenter_index = len(names)
        current = ref_key(parent)
    names.reverse()
    datacenter = None
    if datacenter_index is not None:
        datacenter = "/".join(names[: len(names) - datacenter_index + 1])
    return "/".join(names), datacenter
