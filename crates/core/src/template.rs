//! `{name}` placeholders, as Qmonus renders `correlation_info` into a method and the reflector
//! renders metric names and tags: a known name is replaced, anything else is left as written.

use std::collections::BTreeMap;

/// Replace each `{name}` for which `lookup` has a value; leave everything else as written.
pub fn render_with<'v>(template: &str, lookup: impl Fn(&str) -> Option<&'v str>) -> String {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        match after
            .find('}')
            .and_then(|close| Some((close, lookup(&after[..close])?)))
        {
            Some((close, value)) => {
                out.push_str(value);
                rest = &after[close + 1..];
            }
            None => {
                out.push('{');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// [`render_with`] over a map.
pub fn render(template: &str, vars: &BTreeMap<String, String>) -> String {
    render_with(template, |k| vars.get(k).map(String::as_str))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_replaces_known_placeholders_only() {
        let vars: BTreeMap<String, String> = [("vmid", "42"), ("target", "h1")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        assert_eq!(render("/api/vms/{vmid}/power", &vars), "/api/vms/42/power");
        assert_eq!(render("{target}:{port}", &vars), "h1:{port}");
        assert_eq!(render("{{target}}", &vars), "{h1}");
        assert_eq!(render("a{b", &vars), "a{b");
    }
}
