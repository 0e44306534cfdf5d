//! Roomcast operator: reconciles `RealtimeCluster` resources into gateway Deployments,
//! Services and PodDisruptionBudgets, and scales them on WebSocket connection counts.

pub mod admin_client;
pub mod autoscale;
pub mod conditions;
pub mod controller;
pub mod crd;
pub mod desired;
pub mod drain;
pub mod events;
#[cfg(test)]
mod fixtures;
pub mod leader;
pub mod operator_metrics;
pub mod pods;
pub mod stored;
