-- One command-API submit, as pgbench sees it: the same statements, in the same
-- transaction, against the same tables (and their triggers) as command_api/submit.py.
--
-- Run with -M prepared and -D idempotency=0 (or 1 for the Idempotency-Key variant,
-- which adds the advisory lock, the key lookup and the key row, like the API does).
-- Values the API computes in Python (uuids, the PAN, the JSON payload) are computed here
-- by the server; the payload is built as JSON *text* and cast, so PostgreSQL parses it
-- as it parses the API's. No colon may precede a letter inside a string literal here:
-- pgbench would take it for a variable (hence to_json for the timestamp, not to_char).
\set c1 random(65, 90)
\set c2 random(65, 90)
\set c3 random(65, 90)
\set c5 random(65, 90)
\set c10 random(65, 90)
\set digits random(0, 9999)
\set income_paise random(1500000, 40000000)
\set amount_thousands random(50, 5000)
\set loan random(1, 3)
\set key random(1, 9223372036854775806)
BEGIN;
\if :idempotency
SELECT pg_try_advisory_xact_lock(:key);
SELECT fingerprint, application_id, expires_at FROM idempotency_keys
WHERE key = 'bench-' || :key::text;
\endif
INSERT INTO applications (
    id, pan_number, applicant_name, monthly_income_inr, loan_amount_inr, loan_type,
    status, created_at, updated_at
) VALUES (
    gen_random_uuid(),
    chr(:c1) || chr(:c2) || chr(:c3) || 'P' || chr(:c5) || lpad(:digits::text, 4, '0') || chr(:c10),
    'Lakshmi Chatterjee',
    round(:income_paise / 100.0, 2),
    :amount_thousands * 1000.00,
    (ARRAY['PERSONAL', 'HOME', 'AUTO'])[:loan],
    'PENDING', now(), now()
)
RETURNING id AS application_id, pan_number, applicant_name,
    monthly_income_inr::text AS income, loan_amount_inr::text AS amount, loan_type
\gset
INSERT INTO outbox (
    event_id, aggregatetype, aggregateid, type, topic, payload,
    correlation_id, causation_id, traceparent, occurred_at
)
SELECT e.id, 'application', :application_id, 'LoanApplicationSubmitted',
    'loan_applications_submitted',
    format(
        '{"event_id": "%s", "event_type": "LoanApplicationSubmitted", "schema_version": 1, '
        '"occurred_at": "%s", "aggregate_id": "%s", "correlation_id": "%s", '
        '"causation_id": "%s", "data": {"application_id": "%s", "pan_number": "%s", '
        '"applicant_name": "%s", "monthly_income_inr": "%s", "loan_amount_inr": "%s", '
        '"loan_type": "%s", "submitted_at": "%s"}}',
        e.id, e.at, :application_id::text, e.correlation, e.correlation,
        :application_id::text, :pan_number::text, :applicant_name::text, :income::text,
        :amount::text, :loan_type::text, e.at
    )::jsonb,
    e.correlation, e.correlation, NULL, now()
FROM (
    SELECT gen_random_uuid() AS id, md5(random()::text) AS correlation,
        to_json(now()) #>> '{}' AS at
) AS e;
INSERT INTO application_status (application_id, status, submitted_at, updated_at, version)
VALUES (:application_id::uuid, 'PENDING', now(), now(), 1);
\if :idempotency
INSERT INTO idempotency_keys (key, fingerprint, application_id, created_at, expires_at)
VALUES ('bench-' || :key::text, md5(:key::text) || md5(:application_id),
    :application_id::uuid, now(), now() + interval '24 hours');
\endif
COMMIT;
