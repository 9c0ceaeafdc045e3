//! The daemon serves exactly the contract in `dbus/interfaces/*.xml`: every method, property
//! and signal with its signature, nothing missing and nothing extra.

use aiesim_dbus::ChatDict as _;
use std::collections::{BTreeMap, BTreeSet};

use aiesim_dbus::proxy::BrokerProxy;
use aiesim_e2e::{World, WorldOptions, repo_root, skip_unless_ready};
use quick_xml::{Reader, events::Event};
use zbus::fdo::IntrospectableProxy;

type Members = BTreeMap<String, BTreeSet<String>>;

/// Interface name → "kind name signature" lines, for the org.aiesim interfaces in `xml`.
fn members(xml: &str) -> Members {
    let mut reader = Reader::from_str(xml);
    let mut out = Members::new();
    let (mut iface, mut member, mut args_in, mut args_out) =
        (None::<String>, None::<(String, String)>, String::new(), String::new());
    loop {
        let ev = reader.read_event().expect("well-formed XML");
        let (start, tag) = match &ev {
            Event::Start(t) => (true, t.clone()),
            Event::Empty(t) => (false, t.clone()),
            Event::End(t) => {
                match t.name().as_ref() {
                    b"interface" => iface = None,
                    b"method" | b"signal" => {
                        if let (Some(i), Some((kind, name))) = (&iface, member.take()) {
                            out.entry(i.clone())
                                .or_default()
                                .insert(format!("{kind} {name}({args_in})->({args_out})"));
                        }
                        args_in.clear();
                        args_out.clear();
                    }
                    _ => {}
                }
                continue;
            }
            Event::Eof => break,
            _ => continue,
        };
        let attr = |k: &str| {
            tag.attributes()
                .flatten()
                .find(|a| a.key.as_ref() == k.as_bytes())
                .map(|a| String::from_utf8_lossy(&a.value).into_owned())
        };
        match tag.name().as_ref() {
            b"interface" => iface = attr("name").filter(|n| n.starts_with("org.aiesim.")),
            b"method" | b"signal" => {
                let kind = String::from_utf8_lossy(tag.name().as_ref()).into_owned();
                let name = attr("name").unwrap();
                if start {
                    member = Some((kind, name));
                } else if let Some(i) = &iface {
                    out.entry(i.clone()).or_default().insert(format!("{kind} {name}()->()"));
                }
            }
            b"arg" => {
                let ty = attr("type").unwrap();
                // Signal args have no direction; they are outputs.
                if attr("direction").as_deref() == Some("in") {
                    args_in.push_str(&ty);
                } else {
                    args_out.push_str(&ty);
                }
            }
            b"property" => {
                if let Some(i) = &iface {
                    out.entry(i.clone()).or_default().insert(format!(
                        "property {} {} {}",
                        attr("name").unwrap(),
                        attr("type").unwrap(),
                        attr("access").unwrap()
                    ));
                }
            }
            _ => {}
        }
    }
    out
}

fn contract() -> Members {
    let mut all = Members::new();
    for entry in std::fs::read_dir(repo_root().join("dbus/interfaces")).unwrap() {
        let path = entry.unwrap().path();
        let m = members(&std::fs::read_to_string(&path).unwrap());
        assert_eq!(m.len(), 1, "{} must hold exactly one interface", path.display());
        let name = m.keys().next().unwrap();
        assert_eq!(
            path.file_name().unwrap().to_string_lossy(),
            format!("{name}.xml"),
            "file named after its interface"
        );
        all.extend(m);
    }
    all
}

#[test]
fn the_contract_parses() {
    let c = contract();
    assert!(
        c["org.aiesim.AiEsim1.Broker"].contains("method Chat(a{sv})->(oh)"),
        "{c:#?}"
    );
    assert!(
        c["org.aiesim.AiEsim1.Request"].contains("signal Finished()->(a{sv})"),
        "{c:#?}"
    );
    assert!(c["org.aiesim.AiEsim1.Modem"].contains("property Imei s read"), "{c:#?}");
}

#[tokio::test]
async fn the_daemon_serves_the_contract() {
    if skip_unless_ready("the_daemon_serves_the_contract") {
        return;
    }
    let world = World::start(&WorldOptions::default()).unwrap();
    let conn = world.connect().await.unwrap();
    let (request, _fd) = BrokerProxy::new(&conn)
        .await
        .unwrap()
        .chat(
            aiesim_dbus::ChatOptions {
                messages: vec![aiesim_dbus::Message::new("user", "hi")],
                max_tokens: Some(1),
                ..Default::default()
            }
            .to_chat_dict()
            .unwrap(),
        )
        .await
        .unwrap();
    let mut served = Members::new();
    for path in [
        aiesim_dbus::ROOT_PATH.to_owned(),
        format!("{}/0", aiesim_dbus::MODEM_PATH_PREFIX),
        request.to_string(),
    ] {
        let xml = IntrospectableProxy::builder(&conn)
            .destination(aiesim_dbus::BUS_NAME)
            .path(path)
            .build()
            .await
            .unwrap()
            .introspect()
            .await
            .unwrap();
        served.extend(members(&xml));
    }
    assert_eq!(served, contract());
}
