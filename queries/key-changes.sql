-- name: key-changes
-- description: Key deletions, disables, policy, rotation, grant, alias and key-material changes, newest first
-- param: since | 1970-01-01T00:00:00Z | start of the time window (inclusive)
-- param: until | 2200-01-01T00:00:00Z | end of the time window (exclusive)
SELECT
  event_time,
  event_name,
  kms_key_arn,
  kms_key_alias,
  coalesce(user_identity_arn, user_identity_invoked_by, user_identity_type) AS principal,
  source_ip_address,
  error_code,
  kms_key_state,
  kms_pending_window_days,
  kms_deletion_date,
  kms_grantee_principal,
  kms_grant_operations
FROM kms_events
WHERE event_name IN (
    'ScheduleKeyDeletion', 'CancelKeyDeletion', 'DeleteKey', 'DisableKey', 'EnableKey',
    'PutKeyPolicy', 'DisableKeyRotation', 'EnableKeyRotation', 'RotateKeyOnDemand',
    'CreateGrant', 'RetireGrant', 'RevokeGrant', 'CreateAlias', 'UpdateAlias', 'DeleteAlias',
    'ImportKeyMaterial', 'DeleteImportedKeyMaterial', 'DeleteExpiredKeyMaterial',
    'UpdatePrimaryRegion', 'ReplicateKey', 'CreateKey', 'UpdateKeyDescription')
  AND event_time >= {{since}}
  AND event_time < {{until}}
ORDER BY event_time DESC, event_name;
