-- name: keys-by-context
-- description: Which keys are used under which encryption-context keys (and how many distinct values)
-- param: since | 1970-01-01T00:00:00Z | start of the time window (inclusive)
-- param: until | 2200-01-01T00:00:00Z | end of the time window (exclusive)
SELECT
  kms_key_arn,
  entry['key'] AS context_key,
  count(*) AS calls,
  count(DISTINCT entry['value']) AS distinct_values,
  min(event_time) AS first_seen,
  max(event_time) AS last_seen
FROM (
  SELECT kms_key_arn, event_time, unnest(map_entries(encryption_context)) AS entry
  FROM kms_events
  WHERE encryption_context IS NOT NULL
    AND event_time >= {{since}}
    AND event_time < {{until}}
)
GROUP BY 1, 2
ORDER BY calls DESC, kms_key_arn, context_key;
