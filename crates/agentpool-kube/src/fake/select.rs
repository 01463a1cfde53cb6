//! Which stored objects a list or watch of the in-memory API server returns: label and field
//! selectors of equalities, as the code under test sends them (percent-encoded in the query).

use serde_json::Value;

/// The `key=value` equalities of the query parameter `param` (`labelSelector`,
/// `fieldSelector`), comma-separated in one parameter or spread over several.
pub(super) fn equalities(query: &str, param: &str) -> Vec<(String, String)> {
    let prefix = format!("{param}=");
    query
        .split('&')
        .filter_map(|kv| kv.strip_prefix(prefix.as_str()))
        .flat_map(|s| decode(s).split(',').map(str::to_string).collect::<Vec<_>>())
        .filter_map(|kv| kv.split_once('=').map(|(k, v)| (k.to_string(), v.to_string())))
        .collect()
}

/// Whether object `v` carries every label of `selector`.
pub(super) fn labels_match(v: &Value, selector: &[(String, String)]) -> bool {
    selector
        .iter()
        .all(|(k, want)| v["metadata"]["labels"][k].as_str() == Some(want.as_str()))
}

/// Whether each dotted path of `fields` (`involvedObject.name`) leads to the string given.
pub(super) fn fields_match(v: &Value, fields: &[(String, String)]) -> bool {
    fields.iter().all(|(path, want)| {
        let at = path.split('.').fold(v, |v, key| &v[key]);
        at.as_str() == Some(want.as_str())
    })
}

fn decode(s: &str) -> String {
    let mut out = Vec::new();
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16)
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(if b[i] == b'+' { b' ' } else { b[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
