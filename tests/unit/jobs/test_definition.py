import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hypersdk.errors import InvalidField
from hypersdk.jobs.definition import (
    SubmitContext,
    parse_definition,
    secrets_of,
    spec_to_definition,
    with_secrets,
)
from tests.helpers import VALID_DEFINITION, definition


def problem(data, context=SubmitContext()):
    with pytest.raises(InvalidField) as e:
        parse_definition(data, context)
    return str(e.value)


def test_seed_example_shape_is_accepted_with_defaults():
    spec = parse_definition(
        {
            "vm_path": "Datacenter/vm/production/web-server-1",
            "source": {
                "type": "vsphere",
                "vcenter_url": "vcenter.example.com",
                "username": "admin@vsphere.local",
                "password": "password",
                "datacenter": "Datacenter",
            },
            "destination": {"type": "kvm", "libvirt_uri": "qemu+ssh://user@host/system"},
            "options": {"conversion_method": "vddk", "network_mapping": {"VM Network": "br0"}},
        }
    )
    assert spec.destination.storage_pool == "default"
    assert spec.destination.disk_format == "qcow2"
    assert spec.options.verify is True
    assert spec.options.network_mapping == {"VM Network": "br0"}


@pytest.mark.parametrize(
    "mutate, expected",
    [
        (lambda d: d.pop("vm_path"), "vm_path: is required"),
        (lambda d: d.update(vm_path=42), "vm_path: must be a string"),
        (lambda d: d.update(vm_path="web-1"), "vm_path: must be an inventory path such as Datacenter/vm/folder/name"),
        (lambda d: d.pop("source"), "source: is required"),
        (lambda d: d.update(source="vc"), "source: must be a JSON object"),
        (lambda d: d["source"].update(type="hyperv"), "source.type: must be one of vsphere"),
        (lambda d: d["source"].pop("password"), "source.password: is required"),
        (lambda d: d["source"].update(insecure="yes"), "source.insecure: must be true or false"),
        (lambda d: d["source"].update(pasword="x"), "source.pasword: unknown field"),
        (lambda d: d["source"].update(thumbprint="abc"), "source.thumbprint: must be a SHA-1 or SHA-256 fingerprint as AA:BB:..."),
        (lambda d: d["destination"].update(type="hyperv"), "destination.type: must be one of kvm"),
        (lambda d: d["destination"].update(disk_format="vmdk"), "destination.disk_format: must be one of qcow2, raw"),
        (lambda d: d["destination"].update(output_dir="/x"), "destination.output_dir: give either storage_pool or output_dir, not both"),
        (lambda d: d["destination"].update(storage_pool=None, output_dir="rel/dir"), "destination.output_dir: must be an absolute path"),
        (lambda d: d["destination"].update(domain_name="bad name"), "destination.domain_name: must be letters, digits, '.', '_' or '-' (at most 64)"),
        (lambda d: d["destination"].update(start=1), "destination.start: must be true or false"),
        (lambda d: d["options"].update(conversion_method="ftp"), "options.conversion_method: must be one of https, vddk, virt-v2v"),
        (lambda d: d["options"].update(network_mapping=["br0"]), "options.network_mapping: must be a JSON object"),
        (lambda d: d["options"].update(network_mapping={"VM Network": 3}), "options.network_mapping['VM Network']: must be a bridge name or network:<libvirt network>"),
        (lambda d: d["options"].update(network_mapping={"VM Network": "br 0"}), "options.network_mapping['VM Network']: must be a bridge name (at most 15 letters, digits, '.', '_', '-') or network:<libvirt network>"),
        (lambda d: d["options"].update(network_mapping={"VM Network": "network:"}), "options.network_mapping['VM Network']: must name a libvirt network after 'network:'"),
        (lambda d: d["options"].update(verfy=False), "options.verfy: unknown field"),
        (lambda d: d.update(metadata=[1]), "metadata: must be a JSON object"),
        (lambda d: d.update(id="-starts-with-dash"), "id: must match ^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"),
        (lambda d: d.update(priority=1), "priority: unknown field"),
    ],
)
def test_bad_definitions_name_the_field(mutate, expected):
    data = json.loads(json.dumps(VALID_DEFINITION))
    mutate(data)
    assert problem(data) == expected


def test_metadata_is_free_form():
    spec = parse_definition(definition(metadata={"ticket": "CHG-1", "nested": {"anything": [1, None]}}))
    assert spec.metadata["nested"] == {"anything": [1, None]}


def test_unavailable_conversion_method_is_refused_with_the_reason():
    context = SubmitContext(method_problem=lambda m: "nbdkit's vddk plugin is not installed" if m == "vddk" else None)
    data = definition(options={"conversion_method": "vddk"})
    assert problem(data, context) == "options.conversion_method: nbdkit's vddk plugin is not installed"


def test_named_vcenter_replaces_url_and_credentials():
    data = definition(source={"type": "vsphere", "vcenter": "prod"})
    spec = parse_definition(data, SubmitContext(vcenter_urls={"prod": "vc.example.com"}))
    assert spec.source.vcenter == "prod" and spec.source.password is None
    assert problem(data) == "source.vcenter: unknown vCenter 'prod' (none are configured)"


def test_stored_definition_never_holds_the_password_and_round_trips():
    spec = parse_definition(definition())
    stored = spec_to_definition(spec)
    assert stored["source"]["password"] == "***"
    assert "s3cret-Pa55" not in json.dumps(stored)
    restored = parse_definition(with_secrets(stored, secrets_of(spec)))
    assert restored == spec


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)
# Every place in a valid definition, plus new keys at each level.
PATHS = [(k,) for k in VALID_DEFINITION] + [(k, sub) for k, v in VALID_DEFINITION.items() if isinstance(v, dict) for sub in v]
PATHS += [("extra",), ("source", "extra"), ("destination", "extra"), ("options", "extra")]


@settings(max_examples=300, suppress_health_check=list(HealthCheck), deadline=None)
@given(st.sampled_from(PATHS), json_values)
def test_any_change_is_either_accepted_or_refused_naming_that_field(path, value):
    data = definition()
    target = data
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    try:
        parse_definition(data)
    except InvalidField as e:
        assert e.field.split(".")[0].split("[")[0] == path[0]
        assert e.problem
    else:
        assert path[-1] != "extra"


def test_vcenter_key_is_one_spelling_per_server():
    from hypersdk.jobs.model import vcenter_key

    named = {"prod": "https://VC.Example.com/sdk", "lab": "lab.example.com:8443"}

    def key(**source):
        return vcenter_key(parse_definition(definition(source={"type": "vsphere", "username": "u", "password": "p",
                                                               **source}),
                                            SubmitContext(vcenter_urls=named)).source, named)

    same = {key(vcenter_url=url) for url in ("vc.example.com", "https://vc.example.com/sdk", "VC.example.com.",
                                              "https://VC.example.com:443/sdk/", "vc.example.com:443")}
    assert same == {key(vcenter="prod")} == {"vc.example.com:443"}
    assert key(vcenter_url="vc.example.com:8443") == "vc.example.com:8443"
    assert key(vcenter="lab") == "lab.example.com:8443"
    assert key(vcenter_url="https://[FE80::1]/sdk") == "[fe80::1]:443"
