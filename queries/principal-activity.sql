-- name: principal-activity
-- description: Everything one principal did with KMS keys: which keys, which calls, from where
-- param: principal | required | IAM ARN (user, role or assumed-role session), or a substring of it
-- param: since | 1970-01-01T00:00:00Z | start of the time window (inclusive)
-- param: until | 2200-01-01T00:00:00Z | end of the time window (exclusive)
SELECT
  kms_key_arn,
  event_name,
  source_ip_address,
  count(*) AS calls,
  count(error_code) AS failed,
  min(event_time) AS first_seen,
  max(event_time) AS last_seen
FROM kms_events
WHERE (user_identity_arn = {{principal}} OR strpos(user_identity_arn, {{principal}}) > 0
       OR session_issuer_arn = {{principal}})
  AND event_time >= {{since}}
  AND event_time < {{until}}
GROUP BY 1, 2, 3
ORDER BY calls DESC, kms_key_arn, event_name;
