//! Computed columns: the KMS key a call used (resolved from ids, ARNs, aliases and `resources`)
//! and the `unmapped` catch-all.

use super::unmapped::Unmapped;

use super::Doc;
use super::plan::{Parse, PathSpec, Plan, PlanBuilder};
use crate::read::json::Json;

/// A rule that computes a column, named by `derive = "..."` in the schema file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    KmsKeyArn,
    KmsKeyId,
    KmsKeyAccountId,
    KmsKeyAlias,
    KmsKeySpec,
    KmsDataKeySpec,
    KmsDestinationKeyArn,
    KmsDestinationKeyId,
    KmsPrimaryRegion,
    Unmapped,
}

impl Rule {
    /// Every rule with the name the schema file uses for it.
    pub const ALL: &'static [(&'static str, Rule)] = &[
        ("kms_key_arn", Rule::KmsKeyArn),
        ("kms_key_id", Rule::KmsKeyId),
        ("kms_key_account_id", Rule::KmsKeyAccountId),
        ("kms_key_alias", Rule::KmsKeyAlias),
        ("kms_key_spec", Rule::KmsKeySpec),
        ("kms_data_key_spec", Rule::KmsDataKeySpec),
        ("kms_destination_key_arn", Rule::KmsDestinationKeyArn),
        ("kms_destination_key_id", Rule::KmsDestinationKeyId),
        ("kms_primary_region", Rule::KmsPrimaryRegion),
        ("unmapped", Rule::Unmapped),
    ];

    pub fn from_name(name: &str) -> Option<Rule> {
        Rule::ALL.iter().find(|(n, _)| *n == name).map(|(_, r)| *r)
    }
}

/// The paths the KMS rules read, compiled once.
pub(crate) struct KmsPaths {
    key_id: Vec<PathSpec>,
    destination_key_id: PathSpec,
    alias_name: PathSpec,
    response_key_id: PathSpec,
    response_source_key_id: PathSpec,
    metadata_arn: Vec<PathSpec>,
    metadata_account: Vec<PathSpec>,
    key_spec: Vec<PathSpec>,
    data_key_spec: PathSpec,
    key_pair_spec: PathSpec,
    number_of_bytes: PathSpec,
    primary_region: Vec<PathSpec>,
    resources: PathSpec,
    event_name: PathSpec,
    region: PathSpec,
    caller_account: PathSpec,
    recipient_account: PathSpec,
    caller_arn: PathSpec,
}

impl KmsPaths {
    pub(crate) fn compile(b: &mut PlanBuilder) -> KmsPaths {
        let mut p = |text: &str| b.path(text, Parse::Kms);
        KmsPaths {
            key_id: vec![
                p("requestParameters.keyId"),
                p("requestParameters.sourceKeyId"),
                p("requestParameters.targetKeyId"),
            ],
            destination_key_id: p("requestParameters.destinationKeyId"),
            alias_name: p("requestParameters.aliasName"),
            response_key_id: p("responseElements.keyId"),
            response_source_key_id: p("responseElements.sourceKeyId"),
            metadata_arn: vec![
                p("responseElements.keyMetadata.arn"),
                p("responseElements.keyMetadata.Arn"),
            ],
            metadata_account: vec![
                p("responseElements.keyMetadata.AWSAccountId"),
                p("responseElements.replicaKeyMetadata.AWSAccountId"),
            ],
            key_spec: vec![
                p("responseElements.keyMetadata.keySpec"),
                p("responseElements.replicaKeyMetadata.keySpec"),
                p("requestParameters.keySpec"),
                p("requestParameters.customerMasterKeySpec"),
                p("responseElements.keyMetadata.customerMasterKeySpec"),
            ],
            data_key_spec: p("requestParameters.keySpec"),
            key_pair_spec: p("requestParameters.keyPairSpec"),
            number_of_bytes: p("requestParameters.numberOfBytes"),
            primary_region: vec![
                p("requestParameters.primaryRegion"),
                p("responseElements.replicaKeyMetadata.multiRegionConfiguration.primaryKey.region"),
                p("responseElements.keyMetadata.multiRegionConfiguration.primaryKey.region"),
            ],
            resources: p("resources"),
            event_name: p("eventName"),
            region: p("awsRegion"),
            caller_account: p("userIdentity.accountId"),
            recipient_account: p("recipientAccountId"),
            caller_arn: p("userIdentity.arn"),
        }
    }
}

/// The derived KMS facts of one event.
#[derive(Debug, Default)]
pub(crate) struct KmsFacts {
    key_arn: Option<String>,
    key_id: Option<String>,
    key_account_id: Option<String>,
    alias: Option<String>,
    key_spec: Option<String>,
    data_key_spec: Option<String>,
    destination_key_arn: Option<String>,
    destination_key_id: Option<String>,
    primary_region: Option<String>,
}

impl KmsFacts {
    pub(crate) fn get(&self, rule: Rule) -> Option<&str> {
        match rule {
            Rule::KmsKeyArn => self.key_arn.as_deref(),
            Rule::KmsKeyId => self.key_id.as_deref(),
            Rule::KmsKeyAccountId => self.key_account_id.as_deref(),
            Rule::KmsKeyAlias => self.alias.as_deref(),
            Rule::KmsKeySpec => self.key_spec.as_deref(),
            Rule::KmsDataKeySpec => self.data_key_spec.as_deref(),
            Rule::KmsDestinationKeyArn => self.destination_key_arn.as_deref(),
            Rule::KmsDestinationKeyId => self.destination_key_id.as_deref(),
            Rule::KmsPrimaryRegion => self.primary_region.as_deref(),
            Rule::Unmapped => None,
        }
    }

    pub(crate) fn resolve(plan: &Plan, doc: &Doc<'_>, unmapped: &mut Unmapped) -> KmsFacts {
        let paths = &plan.kms;
        let mut r = Reader { doc, unmapped };
        let event_name = r.text(&paths.event_name).unwrap_or_default();
        let region = r.text(&paths.region);
        let account = r
            .text(&paths.caller_account)
            .or_else(|| r.text(&paths.recipient_account));
        let partition = r
            .text(&paths.caller_arn)
            .and_then(|arn| arn_partition(&arn).map(str::to_string))
            .unwrap_or_else(|| "aws".to_string());
        let context = KeyContext {
            partition: &partition,
            region: region.as_deref(),
            account: account.as_deref(),
        };

        let resource_keys: Vec<String> = match r.value(&paths.resources) {
            Some(Json::Array(items)) => items
                .iter()
                .filter_map(|item| {
                    let object = item.as_object()?;
                    let arn = object
                        .iter()
                        .find(|(k, _)| k.eq_ignore_ascii_case("arn"))
                        .and_then(|(_, v)| v.as_str())?;
                    is_key_arn(arn).then(|| arn.to_string())
                })
                .collect(),
            _ => Vec::new(),
        };

        let destination_key_arn = r.text(&paths.destination_key_id).and_then(|requested| {
            let from_response = r.text(&paths.response_key_id).filter(|k| is_key_arn(k));
            resolve_reference(&requested, &context, resource_keys.iter().rev(), from_response).0
        });

        let requested = r.first(&paths.key_id);
        let response_key = r
            .text(&paths.response_source_key_id)
            .or_else(|| {
                if destination_key_arn.is_some() {
                    None
                } else {
                    r.text(&paths.response_key_id)
                }
            })
            .filter(|k| is_key_arn(k))
            .or_else(|| r.first(&paths.metadata_arn));
        let mut other_resources = resource_keys
            .iter()
            .filter(|k| Some(*k) != destination_key_arn.as_ref());
        let (mut key_arn, alias) = match &requested {
            Some(requested) => resolve_reference(requested, &context, other_resources, response_key),
            None => (other_resources.next().cloned().or(response_key), None),
        };
        if key_arn.is_none()
            && let Some(bare) = &requested
            && !bare.starts_with("alias/")
            && !bare.starts_with("arn:")
        {
            key_arn = context.arn_for(bare);
        }
        let alias = alias.or_else(|| r.text(&paths.alias_name));

        let key_account_id = r
            .first(&paths.metadata_account)
            .or_else(|| key_arn.as_deref().and_then(arn_account).map(str::to_string));
        let generates_data_key = event_name.starts_with("GenerateDataKey");
        let key_spec = if generates_data_key {
            None
        } else {
            r.first(&paths.key_spec)
        };
        let data_key_spec = if generates_data_key {
            r.text(&paths.data_key_spec)
                .or_else(|| r.text(&paths.key_pair_spec))
                .or_else(|| r.text(&paths.number_of_bytes).map(|n| format!("{n}_BYTES")))
        } else {
            None
        };
        let primary_region = r
            .first(&paths.primary_region)
            .or_else(|| (event_name == "ReplicateKey").then(|| region.clone()).flatten());

        KmsFacts {
            key_id: key_arn.as_deref().and_then(key_id_of).map(str::to_string),
            key_arn,
            key_account_id,
            alias,
            key_spec,
            data_key_spec,
            destination_key_id: destination_key_arn
                .as_deref()
                .and_then(key_id_of)
                .map(str::to_string),
            destination_key_arn,
            primary_region,
        }
    }
}

/// Reads event values for the KMS rules, noting case-variant keys in `unmapped`.
struct Reader<'d, 'a, 'u> {
    doc: &'d Doc<'a>,
    unmapped: &'u mut Unmapped,
}

impl<'d, 'a> Reader<'d, 'a, '_> {
    fn value(&mut self, path: &PathSpec) -> Option<&'d Json<'a>> {
        self.doc.lookup(path, self.unmapped)
    }

    fn text(&mut self, path: &PathSpec) -> Option<String> {
        match self.value(path)? {
            Json::String(s) if !s.is_empty() => Some(s.to_string()),
            Json::Number(n) => Some(n.to_string()),
            Json::Decimal(text) => Some(text.to_string()),
            _ => None,
        }
    }

    fn first(&mut self, paths: &[PathSpec]) -> Option<String> {
        paths.iter().find_map(|p| self.text(p))
    }
}

struct KeyContext<'a> {
    partition: &'a str,
    region: Option<&'a str>,
    account: Option<&'a str>,
}

impl KeyContext<'_> {
    /// A bare key id names a key in the caller's account and the event's Region.
    fn arn_for(&self, key_id: &str) -> Option<String> {
        Some(format!(
            "arn:{}:kms:{}:{}:key/{key_id}",
            self.partition, self.region?, self.account?
        ))
    }
}

/// Resolves a key reference (key ARN, key id, alias name or alias ARN) to (key ARN, alias).
fn resolve_reference<'r>(
    requested: &str,
    context: &KeyContext<'_>,
    mut resource_keys: impl Iterator<Item = &'r String>,
    response_key: Option<String>,
) -> (Option<String>, Option<String>) {
    if is_key_arn(requested) {
        return (Some(requested.to_string()), None);
    }
    if let Some(alias) = alias_of(requested) {
        return (
            resource_keys.next().cloned().or(response_key),
            Some(alias.to_string()),
        );
    }
    let suffix = format!("/{requested}");
    let mut keys: Vec<&String> = resource_keys.collect();
    if let Some(at) = keys.iter().position(|k| k.ends_with(&suffix)) {
        return (Some(keys.swap_remove(at).clone()), None);
    }
    if let Some(key) = response_key.filter(|k| k.ends_with(&suffix)) {
        return (Some(key), None);
    }
    (context.arn_for(requested), None)
}

fn is_key_arn(text: &str) -> bool {
    text.starts_with("arn:") && text.contains(":key/")
}

/// `alias/name`, from an alias name or an alias ARN.
fn alias_of(text: &str) -> Option<&str> {
    if text.starts_with("alias/") {
        return Some(text);
    }
    if text.starts_with("arn:") {
        return text.find(":alias/").map(|at| &text[at + 1..]);
    }
    None
}

fn arn_field(arn: &str, index: usize) -> Option<&str> {
    arn.split(':').nth(index).filter(|s| !s.is_empty())
}

fn arn_partition(arn: &str) -> Option<&str> {
    arn.starts_with("arn:").then(|| arn_field(arn, 1)).flatten()
}

fn arn_account(arn: &str) -> Option<&str> {
    arn_field(arn, 4)
}

fn key_id_of(arn: &str) -> Option<&str> {
    arn.rsplit_once(":key/")
        .map(|(_, id)| id)
        .filter(|id| !id.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_references_resolve() {
        let context = KeyContext {
            partition: "aws",
            region: Some("us-west-2"),
            account: Some("111122223333"),
        };
        let arn = "arn:aws:kms:us-west-2:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab".to_string();
        let none: Vec<String> = Vec::new();
        assert_eq!(
            resolve_reference(&arn, &context, none.iter(), None),
            (Some(arn.clone()), None)
        );
        assert_eq!(
            resolve_reference(
                "1234abcd-12ab-34cd-56ef-1234567890ab",
                &context,
                none.iter(),
                None
            ),
            (Some(arn.clone()), None)
        );
        let resources = [arn.clone()];
        assert_eq!(
            resolve_reference("alias/ExampleAlias", &context, resources.iter(), None),
            (Some(arn.clone()), Some("alias/ExampleAlias".into()))
        );
        assert_eq!(
            resolve_reference(
                "arn:aws:kms:us-west-2:111122223333:alias/ExampleAlias",
                &context,
                none.iter(),
                None
            ),
            (None, Some("alias/ExampleAlias".into()))
        );
        assert_eq!(key_id_of(&arn), Some("1234abcd-12ab-34cd-56ef-1234567890ab"));
        assert_eq!(arn_partition("arn:aws-us-gov:iam::1:user/x"), Some("aws-us-gov"));
    }
}
