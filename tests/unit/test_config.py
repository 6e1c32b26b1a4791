import pytest

from hypersdk.config import Config, load_config
from hypersdk.errors import ConfigError

SEED_CONFIG = """
database:
  path: "/var/lib/hypersdk/jobs.db"

metrics:
  enabled: true
  port: 8080

webhooks:
  - url: "https://hooks.example.com/notify"
    events:
      - job.completed
      - job.failed
    enabled: true
    timeout: 30
    retry_count: 3
    headers:
      Authorization: "Bearer token123"
"""


def write(tmp_path, text):
    path = tmp_path / "hypersdk.yaml"
    path.write_text(text)
    return str(path)


def error_of(tmp_path, text):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as e:
        load_config(path)
    message = str(e.value)
    assert message.startswith(path + ": ")
    assert "\n" not in message
    return message[len(path) + 2:]


def test_seed_example_config_loads(tmp_path):
    config = load_config(write(tmp_path, SEED_CONFIG))
    assert config.database.path == "/var/lib/hypersdk/jobs.db"
    assert config.metrics.port == 8080
    hook = config.webhooks[0]
    assert hook.events == ("job.completed", "job.failed")
    assert hook.timeout == 30.0 and hook.retry_count == 3
    assert hook.headers == {"Authorization": "Bearer token123"}


def test_shipped_config_documents_the_defaults_and_enables_metrics():
    import attrs

    shipped = load_config("etc/hypersdk.yaml")
    assert shipped.metrics.enabled is True  # as the API document's example configuration does
    assert attrs.evolve(shipped, metrics=Config().metrics) == Config()


def test_empty_file_gives_defaults(tmp_path):
    config = load_config(write(tmp_path, ""))
    assert config.listen == "tcp:8080:interface=127.0.0.1"
    assert config.worker_count == 4
    assert config.limits.max_body_bytes == 1024 * 1024


@pytest.mark.parametrize(
    "text, expected",
    [
        ("workers: 3", "workers: unknown key"),
        ("log:\n  colour: red", "log.colour: unknown key"),
        ("worker_count: many", "worker_count: must be an integer"),
        ("worker_count: 0", "worker_count: must be 1..256"),
        ("worker_count: true", "worker_count: must be an integer"),
        ("log:\n  format: xml", "log.format: must be one of json, text"),
        ("log: verbose", "log: must be a mapping"),
        ("metrics:\n  port: 70000", "metrics.port: must be a TCP port"),
        ("webhooks:\n  - events: [job.failed]", "webhooks[0].url: is required"),
        ("webhooks:\n  - url: ftp://x", "webhooks[0].url: must be an http(s) URL"),
        ("webhooks:\n  - url: http://x\n    timeout: soon", "webhooks[0].timeout: must be a number of seconds or a duration such as 30s"),
        ("vcenters:\n  prod:\n    url: vc\n    username: u", "vcenters.prod: give exactly one of password, password_file"),
        ("limits:\n  max_body_bytes: -1", "limits.max_body_bytes: must be > 0"),
        ("- a\n- b", "(top level): must be a mapping"),
    ],
)
def test_bad_values_name_the_key(tmp_path, text, expected):
    assert error_of(tmp_path, text) == expected


def test_webhooks_as_the_seed_list_or_as_a_mapping_with_delivery_settings():
    from hypersdk.config import parse_config

    seed = parse_config({"webhooks": [{"url": "https://hooks.example.com/notify", "events": ["job.completed"],
                                       "timeout": "30s", "retry": 5, "headers": {"Authorization": "Bearer x"}}]})
    assert (seed.webhooks[0].timeout, seed.webhooks[0].retry_count) == (30.0, 5)
    assert seed.webhook_settings.deny_private_networks is False
    mapping = parse_config({"webhooks": {"deny_private_networks": True, "queue_size": 10,
                                         "endpoints": [{"url": "http://h/x"}]}})
    assert mapping.webhooks[0].url == "http://h/x"
    assert (mapping.webhook_settings.deny_private_networks, mapping.webhook_settings.queue_size) == (True, 10)


@pytest.mark.parametrize("data, message", [
    ({"webhooks": {"deny_private": True}}, "webhooks.deny_private: unknown key"),
    ({"webhooks": {"queue_size": 0}}, "webhooks.queue_size: must be 1..1000000"),
    ({"webhook_settings": {}}, "webhook_settings: unknown key"),
])
def test_webhook_settings_errors_name_the_key(data, message):
    from hypersdk.config import _Invalid, parse_config

    with pytest.raises(_Invalid, match=message):
        parse_config(data)


@pytest.mark.parametrize("hook, message", [
    ({"url": "http://user:pw@h/x"}, r"webhooks\[0\]\.url: must not carry credentials"),
    ({"url": "http:///x"}, r"webhooks\[0\]\.url: has no host"),
    ({"url": "http://h/x", "events": ["job.done"]}, r"webhooks\[0\]\.events: unknown event 'job.done'"),
])
def test_config_webhooks_are_checked_at_start(tmp_path, hook, message):
    import yaml

    from hypersdk.config import load_config
    from hypersdk.errors import ConfigError

    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"webhooks": [hook]}))
    with pytest.raises(ConfigError, match=message):
        load_config(str(path))


def test_webhook_aliases_and_duration_strings(tmp_path):
    config = load_config(write(tmp_path, "webhooks:\n  - url: http://h/x\n    retry: 5\n    timeout: 1.5m"))
    assert config.webhooks[0].retry_count == 5
    assert config.webhooks[0].timeout == 90.0


def test_invalid_yaml_names_the_line(tmp_path):
    assert error_of(tmp_path, "log:\n  level: [info\n").startswith("not valid YAML (line")


def test_missing_file_is_one_clear_line(tmp_path):
    path = str(tmp_path / "absent.yaml")
    with pytest.raises(ConfigError, match="absent.yaml: cannot read configuration: No such file"):
        load_config(path)


def test_unreadable_password_file_is_reported(tmp_path):
    message = error_of(tmp_path, "vcenters:\n  prod:\n    url: vc\n    username: u\n    password_file: /nonexistent/pw")
    assert message == "vcenters.prod.password_file: cannot read /nonexistent/pw"


def test_a_metrics_listener_of_its_own_follows_the_api_interface():
    from hypersdk.config import metrics_listen, parse_config

    on = parse_config({"metrics": {"enabled": True, "port": 9100}})
    assert metrics_listen(on, "tcp:8080:interface=127.0.0.1") == "tcp:9100:interface=127.0.0.1"
    assert metrics_listen(on, "tcp:8080") == "tcp:9100"  # every interface, as the API
    assert metrics_listen(on, "tcp6:8080:interface=\\:\\:1") == "tcp6:9100:interface=\\:\\:1"
    assert metrics_listen(on, "unix:/run/hypersdk.sock") == "tcp:9100:interface=127.0.0.1"
    assert metrics_listen(on, "tcp:9100") is None  # the API's own port: served there
    assert metrics_listen(parse_config({"metrics": {"enabled": False, "port": 9100}}), "tcp:8080") is None


def test_a_lease_must_outlast_a_slow_heartbeat_by_half_of_it(tmp_path):
    with pytest.raises(ConfigError, match="cluster.lease: must be at least 4 times cluster.heartbeat_interval"):
        load_config(write(tmp_path, "cluster: {heartbeat_interval: 5s, lease: 15s}"))
    assert load_config(write(tmp_path, "cluster: {heartbeat_interval: 5s, lease: 20s}")).cluster.lease == 20.0
