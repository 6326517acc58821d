-- name: cross-account
-- description: KMS keys used by principals of another account than the key owner's
-- param: since | 1970-01-01T00:00:00Z | start of the time window (inclusive)
-- param: until | 2200-01-01T00:00:00Z | end of the time window (exclusive)
SELECT
  kms_key_arn,
  kms_key_account_id AS key_account,
  user_identity_account_id AS caller_account,
  coalesce(user_identity_arn, user_identity_type) AS principal,
  event_name,
  count(*) AS calls,
  min(event_time) AS first_seen,
  max(event_time) AS last_seen
FROM kms_events
WHERE kms_key_account_id IS NOT NULL
  AND user_identity_account_id IS NOT NULL
  AND kms_key_account_id <> user_identity_account_id
  AND event_time >= {{since}}
  AND event_time < {{until}}
GROUP BY 1, 2, 3, 4, 5
ORDER BY calls DESC, kms_key_arn, principal;
