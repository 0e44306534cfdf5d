//! The one contract between the operator and the gateway's configuration: the environment
//! the operator writes into the gateway container (`desired::gateway_env`), resolved as the
//! kubelet would (Secret keys, the pod's name), goes through the gateway's own loader
//! (`Config::from_sources`), and every spec field arrives with its value; every variable
//! the operator writes changes the loaded configuration (none is spelled wrong and ignored).

// Test code: a failed step should stop the test loudly.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use k8s_openapi::api::core::v1::EnvVar;
use roomcast_gateway::Config;
use roomcast_operator::crd::RealtimeCluster;
use roomcast_operator::desired::{
    self, ADMIN_PORT, Defaults, NATS_CREDENTIALS_DIR, NATS_CREDENTIALS_FILE, WS_PORT,
};
use serde_json::{Value, json};

const POD: &str = "chat-7d9c-x2x";

fn cluster(spec: Value) -> RealtimeCluster {
    serde_json::from_value(json!({
        "apiVersion": "roomcast.dev/v1alpha1", "kind": "RealtimeCluster",
        "metadata": {"name": "chat", "namespace": "apps", "uid": "u-1", "generation": 1},
        "spec": spec
    }))
    .unwrap()
}

/// The variables as the container sees them: Secret keys read from `secrets`
/// ((secret, key) → value), `metadata.name` as [`POD`].
fn resolve(env: &[EnvVar], secrets: &BTreeMap<(&str, &str), &str>) -> BTreeMap<String, String> {
    env.iter()
        .map(|var| {
            let value = match (&var.value, &var.value_from) {
                (Some(v), _) => v.clone(),
                (None, Some(from)) => match (&from.secret_key_ref, &from.field_ref) {
                    (Some(s), _) => secrets
                        .get(&(s.name.as_str(), s.key.as_str()))
                        .unwrap_or_else(|| panic!("no secret {}/{}", s.name, s.key))
                        .to_string(),
                    (None, Some(f)) => {
                        assert_eq!(f.field_path, "metadata.name", "{var:?}");
                        POD.to_string()
                    }
                    (None, None) => panic!("unsupported source in {var:?}"),
                },
                (None, None) => String::new(),
            };
            (var.name.clone(), value)
        })
        .collect()
}

fn load(env: &BTreeMap<String, String>) -> Config {
    let config = Config::from_sources(["roomcast-gateway"], env, None)
        .unwrap_or_else(|e| panic!("the gateway refuses the operator's env: {e}\n{env:#?}"));
    config.validate().unwrap();
    config
}

/// The env of `rtc` exactly as the Deployment carries it.
fn deployment_env(rtc: &RealtimeCluster) -> Vec<EnvVar> {
    let objects = desired::build(rtc, &Defaults::default(), Some(2)).unwrap();
    let pod = objects.deployment.spec.unwrap().template.spec.unwrap();
    let container = pod.containers.into_iter().next().unwrap();
    let env = container.env.unwrap_or_default();
    assert_eq!(
        env,
        desired::gateway_env(rtc),
        "the Deployment carries gateway_env"
    );
    env
}

/// Each variable the operator writes must matter: without it the gateway loads something
/// else (a misspelt name would be silently ignored by the loader).
fn assert_every_variable_is_read(env: &BTreeMap<String, String>, full: &Config) {
    for name in env.keys() {
        assert_variable_is_read(env, full, name);
    }
}

fn assert_variable_is_read(env: &BTreeMap<String, String>, full: &Config, name: &str) {
    let mut without = env.clone();
    assert!(
        without.remove(name).is_some(),
        "the operator writes no {name}"
    );
    assert_ne!(
        &load(&without),
        full,
        "{name} is written by the operator but changes nothing in the gateway"
    );
}

#[test]
fn every_spec_field_reaches_the_gateway_configuration() {
    let rtc = cluster(json!({
        "nats": {
            "url": "nats://nats.apps:4222",
            "credentialsSecretRef": {"name": "nats-creds", "key": "user.creds"},
            "historyReplicas": 3
        },
        "auth": {
            "jwtSecretRef": {"name": "jwt", "key": "hs256"},
            "apiKeySecretRef": {"name": "api", "key": "key"},
            "allowedOrigins": ["https://a.example", "https://b.example:8443"]
        },
        "limits": {
            "maxFrameBytes": 12345,
            "maxRoomsPerConnection": 17,
            "publishRatePerSecond": 33,
            "outboundQueueFrames": 444
        },
        "drainSeconds": 45,
        "namespaces": [
            {"name": "chat", "historySize": 200, "historyTtlSeconds": 600, "presenceEvents": false},
            {"name": "feed", "clientPublish": false},
            {"name": "", "historySize": 50}
        ],
        "podTemplate": {"env": [
            // An extra the spec does not cover passes through...
            {"name": "ROOMCAST_LIMITS_MAX_CONNECTIONS", "value": "77"},
            // ...one it covers does not override the spec.
            {"name": "ROOMCAST_DRAIN_SECONDS", "value": "1"}
        ]}
    }));
    let secrets = BTreeMap::from([
        (("jwt", "hs256"), "a-shared-secret-of-some-length"),
        (("api", "key"), "the-api-key"),
    ]);
    let env = resolve(&deployment_env(&rtc), &secrets);
    let config = load(&env);

    let spec = &rtc.spec;
    let listen = |port: i32| SocketAddr::from(([0, 0, 0, 0], u16::try_from(port).unwrap()));
    assert_eq!(config.listen, listen(WS_PORT));
    assert_eq!(config.admin_listen, listen(ADMIN_PORT));
    assert_eq!(config.node_name, POD);
    assert_eq!(config.drain_seconds, u64::from(spec.drain_seconds));
    assert_eq!(config.drain_seconds, 45);
    let l = &spec.limits;
    assert_eq!(
        config.limits.max_frame_bytes,
        usize::try_from(l.max_frame_bytes).unwrap()
    );
    assert_eq!(
        config.limits.max_rooms_per_connection,
        usize::try_from(l.max_rooms_per_connection).unwrap()
    );
    assert_eq!(
        config.limits.publish_rate_per_second,
        l.publish_rate_per_second
    );
    assert_eq!(
        config.limits.outbound_queue_frames,
        usize::try_from(l.outbound_queue_frames).unwrap()
    );
    assert_eq!(config.limits.max_connections, 77);
    assert_eq!(config.nats.url, vec![spec.nats.url.clone()]);
    assert_eq!(
        config.nats.credentials_file,
        Some(PathBuf::from(format!(
            "{NATS_CREDENTIALS_DIR}/{NATS_CREDENTIALS_FILE}"
        )))
    );
    assert_eq!(
        config.auth.jwt_secret.as_deref(),
        Some("a-shared-secret-of-some-length")
    );
    assert_eq!(config.auth.jwt_public_key, None);
    assert_eq!(config.auth.api_key.as_deref(), Some("the-api-key"));
    assert_eq!(config.auth.allowed_origins, spec.auth.allowed_origins);
    assert_eq!(config.nats.history_replicas, 3);
    let ns = config.namespace_options().unwrap();
    let chat = ns.get("chat");
    assert_eq!(
        (
            chat.history_size,
            chat.history_ttl_seconds,
            chat.presence_events
        ),
        (200, 600, false)
    );
    assert!(
        chat.client_publish,
        "unset options keep the protocol's defaults"
    );
    assert!(!ns.get("feed").client_publish);
    assert_eq!(ns.get("feed").history_size, 0);
    assert_eq!(ns.for_room("lobby").history_size, 50);
    assert_eq!(ns.for_room("chat:42").history_size, 200);

    assert_every_variable_is_read(&env, &config);
}

#[test]
fn a_public_key_and_the_defaults_reach_the_gateway_too() {
    // A real P-256 public key, as the Secret would hold it.
    let pem = "-----BEGIN PUBLIC KEY-----\n\
               MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEzAZdFZib4CqSCk4ljxdcGtxcY35a\n\
               Nho3a3FIEt7zw4WLWD3B0GanIcOD7l0ktePFDl+xa78snrnNon1y0eXLTA==\n\
               -----END PUBLIC KEY-----\n";
    let rtc = cluster(json!({
        "nats": {"url": "nats://nats.apps:4222"},
        "auth": {"jwtPublicKeySecretRef": {"name": "jwt", "key": "es256.pub"}}
    }));
    let secrets = BTreeMap::from([(("jwt", "es256.pub"), pem)]);
    let env = resolve(&deployment_env(&rtc), &secrets);
    let config = load(&env);

    let spec = &rtc.spec;
    assert_eq!(config.auth.jwt_public_key.as_deref(), Some(pem));
    assert_eq!(config.auth.jwt_secret, None);
    assert_eq!(config.auth.api_key, None);
    assert!(config.auth.allowed_origins.is_empty());
    assert_eq!(config.nats.credentials_file, None);
    assert_eq!(config.nats.history_replicas, 1);
    assert!(config.namespaces.is_empty());
    // The spec's defaults, not the gateway's, are what runs.
    assert_eq!(config.drain_seconds, u64::from(spec.drain_seconds));
    assert_eq!(
        config.limits.max_frame_bytes,
        usize::try_from(spec.limits.max_frame_bytes).unwrap()
    );
    assert_eq!(
        config.limits.outbound_queue_frames,
        usize::try_from(spec.limits.outbound_queue_frames).unwrap()
    );

    // The one variable the first test does not write (the two JWT keys are exclusive);
    // the others here carry the gateway's own defaults, so dropping them changes nothing.
    assert_variable_is_read(&env, &config, "ROOMCAST_AUTH_JWT_PUBLIC_KEY");
}
