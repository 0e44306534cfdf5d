//! Harness of the operator's end-to-end suite: a Kubernetes API (the in-process stand-in, or
//! the cluster `ROOMCAST_E2E_KUBECONFIG` names), the real `roomcast-operator` binary as a
//! subprocess, real `roomcast-gateway` processes on 127.0.X.Y standing in for pods, and a fake
//! kubelet/ReplicaSet that creates the Pod objects and keeps their readiness.
//!
//! This is test support: a failed step panics with what was being waited for, which fails
//! the calling test.

pub mod admin;
pub mod binaries;
pub mod cluster;
pub mod gateway;
pub mod kubelet;
pub mod operator;
pub mod wait;
