-- name: failed-calls
-- description: Failed KMS calls (AccessDenied and friends) by principal, error and operation
-- param: since | 1970-01-01T00:00:00Z | start of the time window (inclusive)
-- param: until | 2200-01-01T00:00:00Z | end of the time window (exclusive)
SELECT
  coalesce(user_identity_arn, user_identity_invoked_by, user_identity_type) AS principal,
  error_code,
  event_name,
  count(*) AS failures,
  count(DISTINCT kms_key_arn) AS keys,
  min(event_time) AS first_seen,
  max(event_time) AS last_seen,
  first_value(error_message ORDER BY event_time) AS example_message
FROM kms_events
WHERE error_code IS NOT NULL
  AND event_time >= {{since}}
  AND event_time < {{until}}
GROUP BY 1, 2, 3
ORDER BY failures DESC, principal, error_code, event_name;
