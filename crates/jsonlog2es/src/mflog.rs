//! mflog2mfadmin's defaults: the daemons' own JSON logs (`<home>/log/*.log`) into
//! `mflog-%Y.%m.%d`, timestamp from mflog's `timestamp`, with `module`, `hostname` and
//! `module_version` added, and its own records (and any named `elasticsearch`) dropped so it
//! never feeds on itself. `<home>/config/mflog2mfadmin.ini`, when present, replaces them.

use std::path::{Path, PathBuf};

use ironwork_core::config::ConfigErrors;

use crate::config::Config;

/// The built-in configuration, as the INI text it is parsed from (`--print-config` shows it).
pub fn default_ini() -> String {
    format!(
        "# mflog2mfadmin: the daemons' own logs into the admin Elasticsearch.\n\
[elasticsearch]\n\
# url: from [elasticsearch] url in config/ironwork.ini (passed as --url)\n\
index = mflog-%Y.%m.%d\n\
timestamp_field = timestamp\n\
\n\
[state]\n\
name = mflog2mfadmin\n\
\n\
[transform]\n\
drop.name = mflog2mfadmin, elasticsearch\n\
add.module = ironwork\n\
add.hostname = %{{hostname}}\n\
add.module_version = {version}\n\
\n\
[input:mflog]\n\
paths = log/*.log\n\
# redis-server and nginx's error log write their own formats (nginx's access log is JSON).\n\
exclude = redis.log, nginx.log\n",
        version = env!("CARGO_PKG_VERSION")
    )
}

/// The operator's override file, if any.
pub fn override_file(home: &Path) -> PathBuf {
    home.join("config/mflog2mfadmin.ini")
}

/// The configuration for `home`: the override file when it exists, the defaults otherwise.
pub fn config(home: &Path, url: Option<&str>) -> Result<Config, ConfigErrors> {
    let file = override_file(home);
    if file.exists() {
        return Config::load(&file, Some(home), url);
    }
    Config::parse(Path::new("mflog2mfadmin (built-in)"), &default_ini(), Some(home), url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_follow_metwork() {
        let c = config(Path::new("/h"), Some("http://admin:9200")).expect("valid");
        assert_eq!(c.inputs[0].paths, vec![PathBuf::from("/h/log/*.log")]);
        assert_eq!(c.inputs[0].timestamp_field, "timestamp");
        assert_eq!(
            c.state.checkpoint_file(),
            PathBuf::from("/h/var/state/mflog2mfadmin.checkpoints.json")
        );
        assert!(c.transform.drop[0].1.contains(&"mflog2mfadmin".to_string()));
        let added: Vec<&str> = c.transform.add.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(added, ["module", "hostname", "module_version"]);
        assert!(config(Path::new("/h"), None).is_err(), "no url anywhere");
        // nginx's JSON access log is shipped; its plain-text error log and Redis's are not.
        let excluded = |name: &str| c.inputs[0].exclude.iter().any(|p| p.matches(name));
        assert!(excluded("redis.log") && excluded("nginx.log"));
        assert!(!excluded("nginx_access.log") && !excluded("ringmaster.log"));
    }
}
