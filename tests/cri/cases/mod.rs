//! The conformance cases, grouped as critest groups them (runtime info, pod sandboxes,
//! containers, images, stats), plus container events, bad input and restart recovery. `ALL` is
//! the list both runtimes run, in report order.

pub mod bad_input;
pub mod container;
pub mod events;
pub mod image;
pub mod recovery;
pub mod runtime;
pub mod sandbox;
pub mod stats;

use super::instance::Network;
use super::{Case, Mode};
use crate::case;

pub static ALL: &[Case] = &[
    case!(runtime::version),
    case!(runtime::status_conditions),
    case!(sandbox::sandbox_lifecycle),
    case!(sandbox::sandbox_list_filters),
    case!(sandbox::sandbox_hostname),
    case!(sandbox::sandbox_dns_config),
    case!(sandbox::sandbox_host_network),
    case!(sandbox::sandbox_host_pid),
    case!(sandbox::sandbox_host_ipc),
    case!(sandbox::sandbox_port_mapping),
    case!(sandbox::sandbox_sysctls),
    case!(container::container_lifecycle),
    case!(container::container_list_filters),
    case!(container::container_exit_codes),
    case!(container::container_env),
    case!(container::container_image_entrypoint_and_cmd),
    case!(container::container_working_dir),
    case!(container::container_mounts),
    case!(container::container_run_as_user),
    case!(container::container_capabilities),
    case!(container::container_privileged),
    case!(container::container_readonly_rootfs),
    case!(container::container_resources),
    case!(container::container_update_resources),
    case!(container::container_logs),
    case!(container::container_reopen_log),
    case!(container::container_stop_signal),
    case!(container::exec_sync),
    case!(container::exec_sync_timeout),
    case!(image::image_pull_and_status),
    case!(image::image_pull_by_digest),
    case!(image::image_list),
    case!(image::image_remove),
    case!(image::image_pull_auth),
    case!(image::image_media_types),
    case!(image::image_fs_info),
    case!(stats::container_stats),
    case!(stats::list_container_stats),
    case!(stats::pod_sandbox_stats),
    case!(events::container_events),
    case!(bad_input::bad_missing_image, Mode::Exclusive),
    case!(bad_input::bad_wrong_digest, Mode::Exclusive),
    case!(bad_input::bad_unreachable_registry, Mode::Exclusive),
    case!(bad_input::bad_auth_failure, Mode::Exclusive),
    case!(bad_input::bad_invalid_container_config, Mode::Exclusive),
    case!(bad_input::bad_missing_command, Mode::Exclusive),
    case!(bad_input::bad_exits_at_once, Mode::Exclusive),
    case!(
        bad_input::bad_cni_add_failure,
        Mode::Own(Network::FailingAdd)
    ),
    case!(recovery::restart_recovery, Mode::Own(Network::Bridge)),
];
