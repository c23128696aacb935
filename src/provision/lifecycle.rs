//! The bucket lifecycle rule that aborts incomplete multipart uploads.
//!
//! An interrupted large upload leaves its parts behind, invisible to
//! listings and billed forever; a rule aborting uploads older than N days
//! cleans them up. PutBucketLifecycleConfiguration replaces the whole
//! configuration, so the rules of others are carried over verbatim: the
//! configuration is split into its `<Rule>` elements as text, ours is
//! recognised by its `ID`, and only ours is rewritten.

use quick_xml::Reader;
use quick_xml::events::Event;

/// The `ID` of our rule.
pub const RULE_ID: &str = "nix-binary-cache-abort-incomplete-multipart";

/// Our rule as XML.
pub fn our_rule(days: u32) -> String {
    format!(
        "<Rule><ID>{RULE_ID}</ID><Filter><Prefix></Prefix></Filter><Status>Enabled</Status>\
         <AbortIncompleteMultipartUpload><DaysAfterInitiation>{days}</DaysAfterInitiation>\
         </AbortIncompleteMultipartUpload></Rule>"
    )
}

/// One `<Rule>` of a configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Rule {
    /// The element's text, as the store returned it.
    xml: String,
    id: String,
    status: String,
    prefix: String,
    /// A filter other than an empty prefix (tags, size, `And`).
    narrowed: bool,
    abort_days: Option<u32>,
    /// Other actions (`Expiration`, `Transition`, ...).
    other_actions: bool,
}

/// Splits a configuration into its rules (text kept verbatim).
fn rules(xml: &str) -> Result<Vec<Rule>, String> {
    // The reader skips a byte order mark without counting it in its
    // positions, which would shift every rule's text by three bytes.
    let xml = xml.strip_prefix('\u{feff}').unwrap_or(xml);
    let mut reader = Reader::from_str(xml);
    let mut out = Vec::new();
    let mut path: Vec<String> = Vec::new();
    let mut start = 0usize;
    let mut current: Option<Rule> = None;
    loop {
        let before = reader.buffer_position() as usize;
        let event = reader.read_event().map_err(|e| e.to_string())?;
        match event {
            Event::Start(e) => {
                let name = String::from_utf8_lossy(e.local_name().as_ref()).into_owned();
                if name == "Rule" && path.len() == 1 {
                    start = before;
                    current = Some(Rule {
                        xml: String::new(),
                        id: String::new(),
                        status: String::new(),
                        prefix: String::new(),
                        narrowed: false,
                        abort_days: None,
                        other_actions: false,
                    });
                } else if let Some(rule) = current.as_mut()
                    && path.len() == 2
                {
                    match name.as_str() {
                        "ID"
                        | "Status"
                        | "Filter"
                        | "Prefix"
                        | "AbortIncompleteMultipartUpload" => {}
                        _ => rule.other_actions = true,
                    }
                } else if let Some(rule) = current.as_mut()
                    && path.len() == 3
                    && path[2] == "Filter"
                    && name != "Prefix"
                {
                    rule.narrowed = true;
                }
                path.push(name);
            }
            Event::Empty(e) => {
                let name = String::from_utf8_lossy(e.local_name().as_ref()).into_owned();
                if let Some(rule) = current.as_mut()
                    && path.len() == 3
                    && path[2] == "Filter"
                    && name != "Prefix"
                {
                    rule.narrowed = true;
                }
            }
            Event::Text(t) => {
                let text = t.unescape().map_err(|e| e.to_string())?.trim().to_string();
                if let Some(rule) = current.as_mut() {
                    match path.iter().skip(2).map(String::as_str).collect::<Vec<_>>()[..] {
                        ["ID"] => rule.id = text,
                        ["Status"] => rule.status = text,
                        ["Prefix"] | ["Filter", "Prefix"] => rule.prefix = text,
                        ["AbortIncompleteMultipartUpload", "DaysAfterInitiation"] => {
                            rule.abort_days = text.parse().ok()
                        }
                        _ => {}
                    }
                }
            }
            Event::End(_) => {
                path.pop();
                if path.len() == 1
                    && let Some(mut rule) = current.take()
                {
                    rule.xml = xml[start..reader.buffer_position() as usize].to_string();
                    out.push(rule);
                }
            }
            Event::Eof => return Ok(out),
            _ => {}
        }
    }
}

/// What to do with the lifecycle configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LifecycleChange {
    /// Our rule is in force as configured.
    Unchanged,
    /// Write this configuration; `created` when our rule was missing.
    Put { xml: String, created: bool },
}

/// Plans the configuration so that our rule aborts uploads after `days`,
/// keeping every other rule as it is.
pub fn plan(current: Option<&str>, days: u32) -> Result<LifecycleChange, String> {
    let existing = match current {
        Some(xml) if !xml.trim().is_empty() => rules(xml)?,
        _ => Vec::new(),
    };
    let ours = existing.iter().find(|r| r.id == RULE_ID);
    if let Some(r) = ours
        && r.status.eq_ignore_ascii_case("Enabled")
        && r.prefix.is_empty()
        && !r.narrowed
        && !r.other_actions
        && r.abort_days == Some(days)
    {
        return Ok(LifecycleChange::Unchanged);
    }
    let mut xml =
        String::from("<LifecycleConfiguration xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">");
    for r in existing.iter().filter(|r| r.id != RULE_ID) {
        xml.push_str(&r.xml);
    }
    xml.push_str(&our_rule(days));
    xml.push_str("</LifecycleConfiguration>");
    Ok(LifecycleChange::Put {
        xml,
        created: ours.is_none(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_keep_foreign_rules() {
        // As SeaweedFS returns our rule.
        let seaweed = format!(
            "<LifecycleConfiguration xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Rule><ID>{RULE_ID}</ID>\
             <Status>Enabled</Status><Filter><Prefix /></Filter><AbortIncompleteMultipartUpload>\
             <DaysAfterInitiation>7</DaysAfterInitiation></AbortIncompleteMultipartUpload></Rule></LifecycleConfiguration>"
        );
        assert_eq!(plan(Some(&seaweed), 7).unwrap(), LifecycleChange::Unchanged);
        let LifecycleChange::Put { xml, created } = plan(Some(&seaweed), 3).unwrap() else {
            panic!()
        };
        assert!(!created);
        assert!(xml.contains("<DaysAfterInitiation>3<"));
        assert!(!xml.contains("<DaysAfterInitiation>7<"));

        let foreign = "<Rule><ID>logs</ID><Filter><Prefix>logs/</Prefix></Filter><Status>Enabled</Status>\
                       <Expiration><Days>30</Days></Expiration></Rule>";
        let both = format!("<LifecycleConfiguration>{foreign}</LifecycleConfiguration>");
        let LifecycleChange::Put { xml, created } = plan(Some(&both), 7).unwrap() else {
            panic!()
        };
        assert!(created);
        assert!(xml.contains(foreign), "{xml}");
        assert!(xml.contains(&our_rule(7)));
        // Planning again over the result changes nothing.
        assert_eq!(plan(Some(&xml), 7).unwrap(), LifecycleChange::Unchanged);
        assert!(matches!(
            plan(None, 1).unwrap(),
            LifecycleChange::Put { created: true, .. }
        ));
    }

    #[test]
    fn disabled_or_narrowed_rule_is_rewritten() {
        let disabled = our_rule(7).replace("Enabled", "Disabled");
        let cfg = format!("<LifecycleConfiguration>{disabled}</LifecycleConfiguration>");
        assert!(matches!(
            plan(Some(&cfg), 7).unwrap(),
            LifecycleChange::Put { created: false, .. }
        ));
        let narrowed = our_rule(7).replace("<Prefix></Prefix>", "<Prefix>x/</Prefix>");
        let cfg = format!("<LifecycleConfiguration>{narrowed}</LifecycleConfiguration>");
        assert!(matches!(
            plan(Some(&cfg), 7).unwrap(),
            LifecycleChange::Put { .. }
        ));
    }
}
