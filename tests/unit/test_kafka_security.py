import pytest

from streamrec.errors import StackError
from streamrec.kafka_topics import client_options, jaas_quoted, spark_options
from streamrec.schemas.config import Config, KafkaConfig
from streamrec.schemas.config_loader import with_overrides
from streamrec.stack.kafka_broker import properties_escaped, server_properties

pytestmark = pytest.mark.unit

SASL = dict(
    security_protocol="SASL_SSL",
    sasl_mechanism="SCRAM-SHA-512",
    sasl_username="app",
    sasl_password='p"w\\x',
    ssl_ca_file="/etc/ca.pem",
)


def test_plaintext_clients_get_no_credentials() -> None:
    assert client_options(KafkaConfig()) == {"security_protocol": "PLAINTEXT"}
    assert spark_options(KafkaConfig()) == {
        "kafka.bootstrap.servers": "127.0.0.1:19092",
        "kafka.security.protocol": "PLAINTEXT",
    }


def test_sasl_ssl_reaches_both_kinds_of_client() -> None:
    kafka = KafkaConfig(**SASL)
    assert client_options(kafka) == {
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "app",
        "sasl_plain_password": 'p"w\\x',
        "ssl_cafile": "/etc/ca.pem",
    }
    spark = spark_options(kafka)
    assert spark["kafka.sasl.jaas.config"] == (
        "org.apache.kafka.common.security.scram.ScramLoginModule required "
        'username="app" password="p\\"w\\\\x";'
    )
    assert spark["kafka.ssl.truststore.type"] == "PEM"
    assert 'p"w' not in repr(kafka)  # the password stays out of the config's printed form


def test_the_local_broker_gets_a_sasl_listener_with_the_configs_account() -> None:
    cfg = with_overrides(
        Config(),
        kafka=dict(security_protocol="SASL_PLAINTEXT", sasl_username="app", sasl_password="s€c"),
    )
    props = dict(line.split("=", 1) for line in server_properties(cfg).splitlines())
    assert props["listeners"].startswith("SASL_PLAINTEXT://127.0.0.1:19092")
    assert props["inter.broker.listener.name"] == "SASL_PLAINTEXT"
    jaas = props["listener.name.sasl_plaintext.plain.sasl.jaas.config"]
    assert 'user_app="s\\u20acc"' in jaas and 'username="app"' in jaas
    with pytest.raises(StackError, match="broker of your own"):
        server_properties(with_overrides(cfg, kafka=dict(security_protocol="SSL")))


def test_properties_values_survive_javas_reader() -> None:
    assert properties_escaped("a\\b") == "a\\\\b"
    assert properties_escaped("Ω😀") == "\\u03a9\\ud83d\\ude00"
    assert jaas_quoted('a"b\\c') == '"a\\"b\\\\c"'
