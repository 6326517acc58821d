//! AWS settings as the AWS CLI reads them, through `aws-config`: credentials (environment;
//! `AWS_PROFILE` or the default profile of `~/.aws/config` and `~/.aws/credentials`, with
//! `role_arn` + `source_profile`, `credential_process` and SSO; web identity; ECS; the instance
//! metadata service, in that order), the Region and `endpoint_url`; and the bridge that hands
//! those credentials to object_store, refreshed before they expire.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use aws_config::{BehaviorVersion, SdkConfig};
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use object_store::CredentialProvider;
use object_store::aws::AwsCredential;
use tokio::sync::Mutex;

/// Credentials this close to their expiry are fetched again.
const REFRESH_BEFORE: Duration = Duration::from_secs(5 * 60);

/// The AWS configuration (environment, profile files), loaded on the calling runtime: the
/// providers it holds (STS, SSO, instance metadata clients) live on it.
pub(super) async fn sdk_config() -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest()).load().await
}

/// aws-config's credentials as object_store asks for them.
#[derive(Debug)]
pub(super) struct AwsConfigCredentials {
    provider: SharedCredentialsProvider,
    cached: Mutex<Option<(Arc<AwsCredential>, Option<SystemTime>)>>,
}

impl AwsConfigCredentials {
    pub(super) fn new(provider: SharedCredentialsProvider) -> AwsConfigCredentials {
        AwsConfigCredentials {
            provider,
            cached: Mutex::new(None),
        }
    }
}

#[async_trait::async_trait]
impl CredentialProvider for AwsConfigCredentials {
    type Credential = AwsCredential;

    async fn get_credential(&self) -> object_store::Result<Arc<AwsCredential>> {
        let mut cached = self.cached.lock().await;
        if let Some((credential, expiry)) = cached.as_ref()
            && expiry.is_none_or(|expiry| expiry > SystemTime::now() + REFRESH_BEFORE)
        {
            return Ok(credential.clone());
        }
        let credentials = self.provider.provide_credentials().await.map_err(|error| {
            object_store::Error::Generic {
                store: "S3",
                source: format!(
                    "no usable AWS credentials (looked in the environment, the profile files, web identity, ECS and instance metadata, as the AWS CLI does): {}",
                    error_chain(&error)
                )
                .into(),
            }
        })?;
        let credential = Arc::new(AwsCredential {
            key_id: credentials.access_key_id().to_string(),
            secret_key: credentials.secret_access_key().to_string(),
            token: credentials.session_token().map(str::to_string),
        });
        *cached = Some((credential.clone(), credentials.expiry()));
        Ok(credential)
    }
}

/// An error and its causes on one line (aws-config's errors say little without their sources).
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}
