//! The plugins' apps behind nginx: the worker sockets, the generated `nginx.conf` (from the
//! built-in template or the operator's `config/nginx.conf.template`) and its check by
//! `nginx -t` before anything is written.
//!
//! Routing: one upstream per app with one `server unix:…` per worker, `max_fails=0` so a worker
//! that is restarting is skipped by the next request rather than marked down for everyone, and
//! `proxy_next_upstream error timeout` so a refused or withdrawn socket (see ringmaster's
//! `drain_socket`) sends the request to the next worker instead of failing it. Connections to
//! the workers are kept alive for at most [`KEEPALIVE_TIME`], which bounds a drain.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::home::Home;
use crate::plugin::{AppConfig, Plugin};
use crate::settings::Settings;

/// The built-in template; `@NAME@` placeholders are filled by [`render`].
pub const TEMPLATE: &str = include_str!("nginx.conf.template");

/// Idle connections nginx keeps to each worker (per nginx worker process).
const KEEPALIVE_PER_WORKER: u32 = 16;

/// Longest an upstream connection is reused: bounds how long a drained worker keeps serving
/// requests that arrive on connections opened before its socket was withdrawn.
const KEEPALIVE_TIME: std::time::Duration = std::time::Duration::from_secs(2);

/// Longest unix socket path (`sun_path` holds 108 bytes with the NUL).
pub const MAX_SOCKET_PATH: usize = 107;

/// The ringmaster watcher running an app.
pub fn watcher_name(plugin: &str, app: &str) -> String {
    format!("app.{plugin}.{app}")
}

/// The socket worker `wid` of an app listens on (`wid` may be ringmaster's `$(circus.wid)`).
pub fn socket_path(home: &Home, plugin: &str, app: &str, wid: &str) -> PathBuf {
    home.var_dir().join("apps").join(format!("{plugin}.{app}.{wid}.sock"))
}

/// The operator's template, used instead of the built-in one when present.
pub fn template_override(home: &Home) -> PathBuf {
    home.config_dir().join("nginx.conf.template")
}

/// The access log, one JSON object per request in the mflog shape (nginx's stdout, written and
/// rotated by ringmaster).
pub fn access_log(home: &Home) -> PathBuf {
    home.log_dir().join("nginx_access.log")
}

/// Every app of `plugins`, with its plugin.
pub fn apps<'a>(plugins: &'a [&'a Plugin]) -> impl Iterator<Item = (&'a Plugin, &'a AppConfig)> {
    plugins.iter().flat_map(|p| p.apps.iter().map(move |a| (*p, a)))
}

/// `nginx.conf` for `plugins`' apps from `template`; empty when no plugin has an app.
pub fn render(home: &Home, settings: &Settings, plugins: &[&Plugin], template: &str) -> String {
    if apps(plugins).next().is_none() {
        return String::new();
    }
    let n = &settings.nginx;
    let mut upstreams = String::new();
    let mut locations = String::new();
    for (plugin, app) in apps(plugins) {
        let tags = format!(
            "            set $ironwork_plugin {};\n            set $ironwork_app {};\n",
            plugin.name, app.name
        );
        if let Some(dir) = &app.static_dir {
            let _ = write!(
                locations,
                "        location {} {{\n{tags}            alias {}/;\n        }}\n",
                app.static_prefix,
                dir.display()
            );
        }
        if !app.has_workers() {
            continue;
        }
        let upstream = watcher_name(&plugin.name, &app.name);
        let _ = writeln!(upstreams, "    upstream {upstream} {{");
        for wid in 1..=app.numprocesses {
            let sock = socket_path(home, &plugin.name, &app.name, &wid.to_string());
            let _ = writeln!(upstreams, "        server unix:{} max_fails=0;", sock.display());
        }
        let _ = writeln!(
            upstreams,
            "        keepalive {};",
            KEEPALIVE_PER_WORKER * app.numprocesses
        );
        let _ = writeln!(upstreams, "        keepalive_time {}s;", KEEPALIVE_TIME.as_secs());
        let _ = writeln!(upstreams, "        keepalive_timeout {}s;", KEEPALIVE_TIME.as_secs());
        let _ = writeln!(upstreams, "    }}");
        let secs = app.timeout.as_secs().max(1);
        let body = app.client_max_body_size.as_deref().unwrap_or(&n.client_max_body_size);
        let _ = write!(
            locations,
            "        location {} {{\n{tags}            client_max_body_size {body};\n            \
             proxy_read_timeout {secs}s;\n            proxy_send_timeout {secs}s;\n            \
             proxy_next_upstream_tries {tries};\n            proxy_next_upstream_timeout {secs}s;\n            \
             proxy_pass http://{upstream};\n        }}\n",
            app.prefix,
            tries = app.numprocesses
        );
    }
    let fill = [
        ("USER", run_as(home)),
        ("WORKER_PROCESSES", n.worker_processes.clone()),
        ("PID_FILE", home.var_dir().join("nginx.pid").display().to_string()),
        ("TMP_DIR", home.root.join("tmp").display().to_string()),
        ("CLIENT_MAX_BODY_SIZE", n.client_max_body_size.clone()),
        ("LISTEN", n.listen.clone()),
        ("UPSTREAMS", upstreams.trim_end().to_string()),
        ("LOCATIONS", locations.trim_end().to_string()),
    ];
    let mut out = template.to_string();
    for (name, value) in fill {
        out = out.replace(&format!("@{name}@"), &value);
    }
    out
}

/// The template in force: the operator's, or the built-in one. An unreadable override is an error.
pub fn template(home: &Home) -> Result<String, String> {
    let path = template_override(home);
    match std::fs::read_to_string(&path) {
        Ok(t) => Ok(t),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(TEMPLATE.to_string()),
        Err(e) => Err(format!("{}: cannot read: {e}", path.display())),
    }
}

/// nginx's workers run as the owner of the home (nginx ignores `user` unless started as root,
/// and would otherwise drop to `nobody`, who cannot reach the sockets under `var/`).
fn run_as(home: &Home) -> String {
    use std::os::unix::fs::MetadataExt;
    let uid = std::fs::metadata(&home.root).map(|m| m.uid()).unwrap_or(0);
    nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
        .ok()
        .flatten()
        .map_or_else(|| "root".to_string(), |u| u.name)
}

/// Whether `path` can be written into nginx.conf as is: nothing nginx would read as syntax
/// (`;`, braces, quotes, `#`), as a variable (`$`), or as a word break.
fn nginx_safe(path: &Path) -> bool {
    path.to_str().is_some_and(|p| {
        !p.chars()
            .any(|c| c.is_whitespace() || c.is_control() || ";{}\"'#$\\".contains(c))
    })
}

/// Problems nginx would have with the home's and the apps' paths, as configuration errors.
pub fn check_paths(home: &Home, plugins: &[&Plugin]) -> Vec<String> {
    if apps(plugins).next().is_none() {
        return Vec::new();
    }
    let mut problems = Vec::new();
    if !nginx_safe(&home.root) {
        problems.push(format!(
            "{}: the home's path cannot go into nginx.conf (no spaces, quotes, ';', '{{', '}}', '#', '$' or '\\')",
            home.root.display()
        ));
    }
    for (p, a) in apps(plugins) {
        if let Some(dir) = a.static_dir.as_ref().filter(|d| !nginx_safe(d)) {
            problems.push(format!(
                "{}: [app_{}] static: {} cannot go into nginx.conf (no spaces, quotes, ';', '{{', '}}', '#', '$' or '\\')",
                p.config_file.display(),
                a.name,
                dir.display()
            ));
        }
    }
    problems.extend(check_sockets(home, plugins));
    problems
}

fn check_sockets(home: &Home, plugins: &[&Plugin]) -> Vec<String> {
    apps(plugins)
        .filter(|(_, a)| a.has_workers())
        .filter_map(|(p, a)| {
            let longest = socket_path(home, &p.name, &a.name, &a.numprocesses.to_string());
            let len = longest.as_os_str().len();
            (len > MAX_SOCKET_PATH).then(|| {
                format!(
                    "{}: [app_{}]: the worker socket {} is {len} bytes long, over the {MAX_SOCKET_PATH} a unix \
                     socket allows (move the home to a shorter path)",
                    p.config_file.display(),
                    a.name,
                    longest.display()
                )
            })
        })
        .collect()
}

/// Run `nginx -t` on `conf` (already written at that path). Errors: nginx's own words.
pub fn test(binary: &str, conf: &Path) -> Result<(), String> {
    let out = std::process::Command::new(binary)
        .arg("-t")
        .arg("-q")
        .arg("-c")
        .arg(conf)
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {binary} -t: {e} (install nginx, or set [nginx] binary)"))?;
    if out.status.success() {
        return Ok(());
    }
    let words = String::from_utf8_lossy(&out.stderr);
    let words = words.trim();
    Err(format!(
        "nginx refuses the generated configuration: {}",
        if words.is_empty() { "no reason given" } else { words }
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_paths_nginx_reads_as_one_word_go_into_its_file() {
        assert!(nginx_safe(Path::new("/srv/ironwork-home/plugins/a_b/www")));
        for bad in [
            "/srv/my home",
            "/srv/a;b",
            "/srv/${x}",
            "/srv/a{b",
            "/srv/a\"b",
            "/srv/a#b",
            "/srv/a\\b",
        ] {
            assert!(!nginx_safe(Path::new(bad)), "{bad}");
        }
    }
}
