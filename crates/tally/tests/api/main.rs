//! Black-box tests over real HTTP. One binary, so the crate links once.
//!
//! Behaviour tests are plain `async fn(Backend)` and `backend_tests!` turns
//! each into one `#[tokio::test]` per backend, so every backend keeps the
//! same promises.

mod helpers;
mod instances;
mod nodes;

mod balancer;
mod cluster;
mod cors;
mod crash;
mod faultproxy;
mod faults;
mod fencing;
mod hygiene;
mod likes;
mod limits;
mod live;
mod load_panel;
mod loadgen;
mod memory;
mod monitoring;
mod operations;
mod posts;
mod production;
mod sessions;
mod trending;
mod users;
mod versions;
mod web;

/// Generates a test per backend for each named behaviour test.
#[macro_export]
macro_rules! backend_tests {
    ($($name:ident),* $(,)?) => {
        mod embedded {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    super::$name($crate::helpers::Backend::Embedded).await;
                }
            )*
        }
        mod redis_pg {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    super::$name($crate::helpers::Backend::RedisPg).await;
                }
            )*
        }
        mod cluster_pg {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    super::$name($crate::helpers::Backend::ClusterPg).await;
                }
            )*
        }
    };
}
