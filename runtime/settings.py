"""The single validated configuration of every prequal process.

Every value comes from the environment (prefix ``PREQUAL_``) or a ``.env`` file; nothing
else in the code base reads the environment for configuration.
"""

from __future__ import annotations

import re
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote

from pydantic import Field, NonNegativeInt, PositiveFloat, PositiveInt, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class RelayKind(StrEnum):
    """Which relay moves outbox rows to Kafka."""

    POLLING = "polling"
    DEBEZIUM = "debezium"


class Environment(StrEnum):
    """Where a process runs; outside development, secrets must be real."""

    DEVELOPMENT = "development"
    TEST = "test"
    PRODUCTION = "production"


#: Secret values refused outside development (compared case-insensitively): empty,
#: the shipped defaults, and what people type when they mean "fill this in later".
PLACEHOLDER_SECRETS = frozenset(
    {
        "",
        "prequal",
        "postgres",
        "changeme",
        "change-me",
        "change_me",
        "password",
        "secret",
        "placeholder",
        "example",
        "todo",
        "xxx",
    }
)


#: Where infra/local.sh's three-broker cluster listens (PREQUAL_KAFKA_BROKERS=3, default
#: ports): each broker's PLAINTEXT listener, its KRaft controller one port above.
CLUSTER_BOOTSTRAP_SERVERS = "127.0.0.1:9092,127.0.0.1:9094,127.0.0.1:9096"


#: Signature algorithms a token may use: public-key ones only, so that no key the APIs
#: hold can sign a token (and HS256 keyed with the public key, the classic confusion, is
#: refused by name).
ASYMMETRIC_ALGORITHMS = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "ES256", "ES384"})


class Settings(BaseSettings):
    """Configuration shared by every process; each process reads the fields it needs."""

    model_config = SettingsConfigDict(
        env_prefix="PREQUAL_",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        frozen=True,
        # A refused setting is reported by name; its value may be a secret.
        hide_input_in_errors=True,
    )

    environment: Environment = Field(
        Environment.DEVELOPMENT,
        description="development, test or production; outside development every secret"
        " must be set, and not to a placeholder, or the process refuses to start.",
    )

    # --- PostgreSQL -------------------------------------------------------------------
    pg_host: str = Field("127.0.0.1", description="PostgreSQL host.")
    pg_port: PositiveInt = Field(55432, description="PostgreSQL port.")
    pg_user: str = Field("prequal", description="PostgreSQL role.")
    pg_password: SecretStr = Field(SecretStr("prequal"), description="PostgreSQL password.")
    pg_database: str = Field("prequal", description="PostgreSQL database name.")
    pg_connect_timeout_s: PositiveInt = Field(
        2, description="Seconds to wait for a new database connection before failing."
    )
    pg_statement_timeout_ms: PositiveInt = Field(
        5000, description="Server-side limit for one statement, in milliseconds."
    )
    pg_pool_size: PositiveInt = Field(10, description="Connections kept by an API's pool.")
    pg_pool_pre_ping: bool = Field(
        False,
        description="Ping each pooled connection before use (one more round trip per"
        " request); off, a connection broken by a database restart fails one request"
        " with 503 and is replaced.",
    )
    pg_pool_timeout_s: PositiveFloat = Field(
        2.0, description="Seconds a request waits for a pooled connection before a 503."
    )
    db_deadline_s: PositiveFloat = Field(
        2.0,
        description="Client-side deadline of an API request's database work, in seconds:"
        " past it the request answers 503 and its connection is discarded, whatever the"
        " server does (frozen, blackholed).",
    )
    health_deadline_s: PositiveFloat = Field(
        1.0, description="Client-side deadline of one dependency check of /health, in seconds."
    )
    loop_db_deadline_s: PositiveFloat = Field(
        6.0,
        description="Client-side deadline of each database call of the relay and the"
        " workers, in seconds (above the statement timeout, so a slow statement is ended by"
        " the server first); past it the connection is closed and the batch retried.",
    )
    pg_tcp_user_timeout_ms: PositiveInt = Field(
        5000,
        description="TCP_USER_TIMEOUT of every PostgreSQL connection, in milliseconds: how"
        " long sent data may stay unacknowledged before the kernel drops the connection.",
    )
    pg_keepalives_idle_s: PositiveInt = Field(
        5,
        description="Seconds of silence before TCP keepalive probes start on a PostgreSQL"
        " connection (then 3 probes, 2 s apart).",
    )
    db_breaker_threshold: PositiveInt = Field(
        3,
        description="Consecutive database deadline failures after which an API's circuit"
        " breaker opens and answers 503 at once.",
    )
    db_breaker_open_s: PositiveFloat = Field(
        2.0,
        description="Seconds an open circuit breaker fails fast before one half-open probe"
        " may try the database again.",
    )

    # --- Kafka ------------------------------------------------------------------------
    kafka_brokers: Literal[1, 3] = Field(
        1,
        description="Brokers of the local Kafka (infra/local.sh, make run): 1, one KRaft"
        " node that is broker and controller; 3, a cluster of three such nodes with a"
        " controller quorum of three, where topics get 3 replicas and min.insync.replicas"
        " 2. With 3, an unset PREQUAL_KAFKA_BOOTSTRAP_SERVERS names the three brokers"
        f" ({CLUSTER_BOOTSTRAP_SERVERS}) and an unset PREQUAL_TOPIC_REPLICATION_FACTOR is 3.",
    )
    kafka_bootstrap_servers: str = Field(
        "127.0.0.1:9092",
        description="Kafka bootstrap servers, comma separated (default with"
        " PREQUAL_KAFKA_BROKERS=3: all three brokers).",
    )
    topic_submitted: str = Field(
        "loan_applications_submitted", description="Topic of submitted applications."
    )
    topic_credit_reports: str = Field(
        "credit_reports_generated", description="Topic of generated credit reports."
    )
    topic_decisions: str = Field(
        "loan_application_decisions", description="Topic of application decisions."
    )
    topic_dlq: str = Field("loan_processing_dlq", description="Dead-letter topic.")
    topic_partitions: PositiveInt = Field(3, description="Partitions of each topic.")
    topic_replication_factor: PositiveInt = Field(
        1,
        description="Replication factor of each topic (default with PREQUAL_KAFKA_BROKERS=3:"
        " 3); from 3 replicas on, a topic also gets min.insync.replicas=2.",
    )
    topic_retention_ms: PositiveInt = Field(
        7 * 24 * 3600 * 1000, description="Retention of each topic, in milliseconds."
    )

    # --- Relay ------------------------------------------------------------------------
    relay: RelayKind = Field(RelayKind.POLLING, description="Relay: polling or debezium.")
    relay_batch_size: PositiveInt = Field(
        1000, description="Outbox rows claimed and produced per relay transaction."
    )
    relay_poll_interval_s: PositiveFloat = Field(
        1.0, description="Fallback poll interval when no NOTIFY arrives, in seconds."
    )
    relay_delivery_timeout_ms: PositiveInt = Field(
        15000, description="How long the relay waits for Kafka to acknowledge a batch."
    )
    relay_standby_retry_s: PositiveFloat = Field(
        2.0, description="How often a standby relay tries to become the active one."
    )

    # --- Consumers ----------------------------------------------------------------------
    instance_id: str = Field(
        "0",
        pattern=r"^[A-Za-z0-9_.-]{1,64}$",
        description="This instance's stable name; part of the credit worker's transactional.id.",
    )
    consumer_batch_size: PositiveInt = Field(
        500, description="Messages a worker takes per poll and per transaction."
    )
    consumer_batch_linger_ms: NonNegativeInt = Field(
        10,
        description="After a batch's first message, how long a worker waits for more"
        " (fewer, larger transactions under load; at most this much added latency).",
    )
    credit_worker_commit_interval_ms: NonNegativeInt = Field(
        100,
        description="After a batch's first message, how long the credit worker gathers more"
        " before it commits the batch's Kafka transaction; a full batch commits at once."
        " Kafka Streams' commit.interval.ms under exactly-once is the same 100 ms: at low"
        " rates a transaction per message is what the broker's CPU goes to.",
    )
    kafka_session_timeout_ms: PositiveInt = Field(
        10000, description="Consumer group session timeout, in milliseconds."
    )
    kafka_transaction_timeout_ms: PositiveInt = Field(
        10000, description="Credit worker's Kafka transaction timeout, in milliseconds."
    )
    kafka_statistics_interval_ms: PositiveInt = Field(
        5000,
        description="How often consumers refresh the consumer-lag gauge, in milliseconds.",
    )
    group_credit_worker: str = Field("credit-worker", description="Credit worker's group.")
    group_decision_worker: str = Field(
        "decision-worker", description="Decision worker's consumer group."
    )
    group_projector: str = Field("query-projector", description="Projector's consumer group.")

    # --- Observability ports of the processes without an HTTP API ----------------------
    relay_metrics_port: PositiveInt = Field(
        8005, description="Port of the relay's /health and /metrics."
    )
    credit_worker_metrics_port: PositiveInt = Field(
        8002, description="Port of the credit worker's /health and /metrics."
    )
    decision_worker_metrics_port: PositiveInt = Field(
        8003, description="Port of the decision worker's /health and /metrics."
    )
    projector_metrics_port: PositiveInt = Field(
        8004, description="Port of the projector's /health and /metrics."
    )

    # --- Debezium (PREQUAL_RELAY=debezium) --------------------------------------------
    connect_url: str = Field(
        "http://127.0.0.1:8083", description="Kafka Connect REST API, for status and health."
    )
    debezium_connector: str = Field(
        "prequal-outbox", description="Name of the Debezium outbox connector."
    )
    debezium_slot: str = Field(
        "prequal_outbox", description="Replication slot the Debezium connector reads."
    )
    debezium_publication: str = Field(
        "prequal_outbox_pub", description="Publication (outbox table only) the slot decodes."
    )
    group_confirmer: str = Field(
        "outbox-confirmer",
        description="Consumer group that marks CDC-delivered outbox rows as published.",
    )

    # --- HTTP -------------------------------------------------------------------------
    http_host: str = Field("127.0.0.1", description="Interface the HTTP services bind.")
    http_keep_alive_s: PositiveInt = Field(
        75,
        description="How long the HTTP services keep an idle client connection open, in"
        " seconds. The server must close last: a client (httpx: 5 s) or load balancer (AWS"
        " ALB: 60 s) that reuses a connection the server is closing gets a reset request."
        " 75 s is nginx's default keepalive_timeout.",
    )
    command_api_port: PositiveInt = Field(8000, description="Port of the command API.")
    command_api_workers: PositiveInt = Field(
        1,
        description="Command API worker processes; one Python process uses one"
        " core at most. Metrics are summed across workers.",
    )
    command_api_http_server: Literal["uvicorn", "granian"] = Field(
        "uvicorn",
        description="HTTP server of the command API: uvicorn (with uvloop and httptools)"
        " or granian (Rust, hyper). Both serve the same FastAPI app; docs/benchmarks.md"
        " measures them side by side.",
    )
    query_api_port: PositiveInt = Field(8001, description="Port of the query API.")
    query_api_base_url: str = Field(
        "http://127.0.0.1:8001",
        description="Public base URL of the query API, used in the Location header.",
    )
    idempotency_key_ttl_s: PositiveInt = Field(
        24 * 3600, description="Lifetime of an Idempotency-Key, in seconds."
    )
    http_max_body_bytes: PositiveInt = Field(
        16 * 1024,
        description="Largest request body the APIs read, in bytes; a larger one is refused"
        " with 413 (by Content-Length, or while it streams).",
    )
    cors_allow_origins: str = Field(
        "",
        description="Browser origins allowed to call the APIs (CORS), comma separated;"
        " empty sends no CORS headers at all.",
    )

    # --- Access control (OAuth 2.0 bearer tokens, RFC 6750) ---------------------------
    auth_jwks_url: str = Field(
        "",
        description="JWKS URL of the identity provider whose tokens the APIs accept (https"
        " in production). Empty in development: the development issuer's keys under"
        " PREQUAL_AUTH_DEV_DIR (made on first use; tokens from `prequal-ops token`).",
    )
    auth_issuer: str = Field(
        "prequal-development-issuer", description="Expected `iss` of every token."
    )
    auth_audience: str = Field("prequal", description="Expected `aud` of every token.")
    auth_algorithms: str = Field(
        "RS256,ES256",
        description="Signature algorithms accepted, comma separated; asymmetric only"
        " (RS256, RS384, RS512, ES256, ES384, PS256): HS* and none are refused.",
    )
    auth_leeway_s: NonNegativeInt = Field(
        30, description="Clock skew allowed on `exp` and `nbf`, in seconds."
    )
    auth_jwks_refresh_s: NonNegativeInt = Field(
        10,
        description="A token naming an unknown key id fetches the JWKS again at most this"
        " often, in seconds (a key rotation is seen within it; made-up key ids cannot"
        " flood the identity provider).",
    )
    auth_dev_dir: str = Field(
        ".infra/auth",
        description="Where the development issuer keeps its key pair and JWKS (development"
        " and test only; production refuses it).",
    )
    rate_limit_per_s: PositiveFloat = Field(
        200.0,
        description="Requests per second each client may make, on average, across every"
        " API process (a token bucket kept in PostgreSQL).",
    )
    rate_limit_burst: PositiveInt = Field(
        400, description="Requests a client may make at once before the rate applies."
    )

    liveness_stale_s: PositiveFloat = Field(
        60.0,
        description="A relay or worker whose loop has not run for this long answers 503 on"
        " /livez (an orchestrator then restarts it); waiting out an outage counts as running.",
    )

    # --- Logging ----------------------------------------------------------------------
    log_level: str = Field("INFO", description="Log level of every process.")

    # --- Debezium heartbeat (issue 11) ------------------------------------------------
    debezium_heartbeat_interval_ms: NonNegativeInt = Field(
        10_000,
        description="Debezium heartbeat period, in milliseconds (0: none). Each heartbeat"
        " emits a logical message in the outbox database and confirms the slot's position,"
        " so a quiet outbox does not pin the WAL other tables and databases write.",
    )

    @model_validator(mode="before")
    @classmethod
    def _a_cluster_is_reached_and_replicated_whole(cls, data: Any) -> Any:
        """With three brokers, unset bootstrap servers and replication factor follow them.

        A client bootstrapped from one broker cannot start while that broker is down, and
        a topic of one replica loses its data with its broker: the cluster is there to
        survive exactly that. Explicit values are kept.
        """
        if not isinstance(data, dict):
            return data
        data = dict(data)
        brokers = data.get("kafka_brokers", 1)
        # The environment gives "3"; a Literal of ints matches no string by itself.
        if isinstance(brokers, str) and brokers.strip() in ("1", "3"):
            data["kafka_brokers"] = brokers = int(brokers)
        if brokers == 3:
            data.setdefault("kafka_bootstrap_servers", CLUSTER_BOOTSTRAP_SERVERS)
            data.setdefault("topic_replication_factor", 3)
        return data

    @property
    def topic_min_insync_replicas(self) -> int:
        """Replicas that must have a write before it is acknowledged (acks=all).

        2 of 3 replicas: one broker may be lost (or restarted) without refusing a write or
        losing an acknowledged one. With fewer replicas there is nothing to wait for.
        """
        return 2 if self.topic_replication_factor >= 3 else 1

    @model_validator(mode="after")
    def _tokens_are_verified_as_production_needs(self) -> Settings:
        """Asymmetric algorithms only; in production, an https JWKS URL, no dev issuer."""
        weak = [a for a in self.auth_algorithm_list if a not in ASYMMETRIC_ALGORITHMS]
        if weak or not self.auth_algorithm_list:
            raise ValueError(
                f"PREQUAL_AUTH_ALGORITHMS may name only {', '.join(sorted(ASYMMETRIC_ALGORITHMS))}"
            )
        if self.environment is Environment.PRODUCTION and not self.auth_jwks_url.startswith(
            "https://"
        ):
            raise ValueError(
                "PREQUAL_AUTH_JWKS_URL must be the identity provider's https JWKS URL in"
                " production; the development issuer refuses to run there"
            )
        return self

    @property
    def auth_algorithm_list(self) -> list[str]:
        """The accepted signature algorithms."""
        return [a.strip() for a in self.auth_algorithms.split(",") if a.strip()]

    @model_validator(mode="after")
    def _secrets_are_real_outside_development(self) -> Settings:
        """Refuse an empty or placeholder secret anywhere but on a developer's machine."""
        if self.environment is Environment.DEVELOPMENT:
            return self
        for name, field in type(self).model_fields.items():
            value = getattr(self, name)
            if not isinstance(value, SecretStr):
                continue
            secret = value.get_secret_value()
            default = field.default
            shipped = default.get_secret_value() if isinstance(default, SecretStr) else None
            if secret.strip().lower() in PLACEHOLDER_SECRETS or secret == shipped:
                # The message names the variable, never the value.
                raise ValueError(
                    f"PREQUAL_{name.upper()} is empty or a placeholder; set a real secret"
                    f" (PREQUAL_ENVIRONMENT={self.environment.value} refuses placeholders)"
                )
        return self

    @property
    def cors_origins(self) -> list[str]:
        """The origins of ``cors_allow_origins``, without blanks."""
        return [o.strip() for o in self.cors_allow_origins.split(",") if o.strip()]

    def as_environment(self) -> dict[str, str]:
        """These settings as ``PREQUAL_*`` variables, to hand to a child process."""
        env = {}
        for name, value in self.model_dump().items():
            plain = value.get_secret_value() if isinstance(value, SecretStr) else value
            env[f"PREQUAL_{name.upper()}"] = str(
                plain.value if isinstance(plain, StrEnum) else plain
            )
        return env

    @property
    def outbox_topics(self) -> list[str]:
        """The topics outbox rows are routed to (what the CDC confirmer reads)."""
        return [self.topic_submitted, self.topic_decisions]

    @property
    def sqlalchemy_url(self) -> str:
        """The async SQLAlchemy URL (psycopg 3 driver) for the APIs."""
        return f"postgresql+psycopg://{self._credentials}@{self.pg_host}:{self.pg_port}/{self.pg_database}"

    @property
    def psycopg_conninfo(self) -> str:
        """A libpq URI for plain psycopg connections (relay, workers, migrations)."""
        return f"postgresql://{self._credentials}@{self.pg_host}:{self.pg_port}/{self.pg_database}"

    @property
    def _credentials(self) -> str:
        return (
            f"{quote(self.pg_user, safe='')}:{quote(self.pg_password.get_secret_value(), safe='')}"
        )


def settings_table() -> str:
    """The configuration table of the README, generated from :class:`Settings`."""
    lines = ["| Variable | Default | Meaning |", "| --- | --- | --- |"]
    for name, field in Settings.model_fields.items():
        default = field.default
        if isinstance(default, SecretStr):
            default = "(secret)"
        elif isinstance(default, StrEnum):
            default = default.value
        shown = f"`{default}`" if default != "" else "(empty)"
        lines.append(f"| `PREQUAL_{name.upper()}` | {shown} | {field.description} |")
    return "\n".join(lines)


def write_settings_table(readme: str) -> None:
    """Rewrite the generated table between the settings-table markers of ``readme``."""
    path = Path(readme)
    text = path.read_text()
    start, end = "<!-- settings-table:start -->\n", "\n<!-- settings-table:end -->"
    pattern = re.compile(re.escape(start) + ".*?" + re.escape(end), re.DOTALL)
    path.write_text(pattern.sub(lambda _m: start + settings_table() + end, text))
