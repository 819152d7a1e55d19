//! What `capstan agent` needs to join a cluster and connect its pods to the other nodes':
//! token discovery of the cluster (`discovery`, kubeadm's) and host-gw pod routes (`hostgw`,
//! flannel's backend). `capstan server` runs the route controller too.

// The agent command that calls discovery comes next; tests/join_discovery.rs uses it now.
#[allow(dead_code)]
pub mod discovery;
pub mod hostgw;
