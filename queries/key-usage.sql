-- name: key-usage
-- description: Who used a KMS key, from where, with which calls (successes and failures)
-- param: key | required | key id, key ARN, alias name (alias/...) or alias ARN
-- param: since | 1970-01-01T00:00:00Z | start of the time window (inclusive)
-- param: until | 2200-01-01T00:00:00Z | end of the time window (exclusive)
SELECT
  coalesce(user_identity_arn, user_identity_invoked_by, user_identity_type) AS principal,
  source_ip_address,
  event_name,
  count(*) AS calls,
  count(error_code) AS failed,
  min(event_time) AS first_seen,
  max(event_time) AS last_seen
FROM kms_events
WHERE (kms_key_id = {{key}} OR kms_key_arn = {{key}} OR kms_key_alias = {{key}}
       OR kms_key_alias = regexp_replace({{key}}, '^arn:[^:]+:kms:[^:]*:[^:]*:', ''))
  AND event_time >= {{since}}
  AND event_time < {{until}}
GROUP BY 1, 2, 3
ORDER BY calls DESC, principal, source_ip_address, event_name;
