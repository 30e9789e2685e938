//! ironwork (the module): what turns a runtime home and its plugins into a running stack.
//!
//! - [`home`]: the runtime home layout (`$IRONWORK_HOME`) and `ironwork init`.
//! - [`settings`]: `config/ironwork.ini`, the module's own settings.
//! - [`plugin`]: `plugins/<name>/config.ini` (steps, switch rules, extra daemons, apps, collections,
//!   reflections) with the admin overrides in `config/plugins/<name>.ini`, parsed and validated.
//! - [`plugin_commands`]: `ironwork plugins create|list|install|remove`.
//! - [`lifecycle`]: `start`, `stop` and `status` of a home's stack through ringmaster.
//! - [`cli`]: the `ironwork` command line; [`demo`]: `ironwork demo`.
//! - [`generate`]: settings + plugins → `tmp/config_auto/` (ringmaster.ini,
//!   directory_observer.ini, switch_rules.ini, collector.ini, reflector.ini, nginx.conf),
//!   byte-identical for the same input.
//! - [`nginx`]: the plugins' apps behind the generated nginx front; [`app_stats`]: their
//!   per-app figures for the collector.

pub mod app_stats;
pub mod cli;
pub mod demo;
pub mod generate;
pub mod home;
pub mod lifecycle;
pub mod nginx;
pub mod plugin;
pub mod plugin_commands;
pub mod settings;
