//! Administrative calls through a real polkitd on the world's bus: the bus policy lets the
//! `aiesim-apps` group send them, and aiesimd asks polkit for each. A test rule gives user
//! `nobody` `manage-budgets`; user `daemon` gets polkit's defaults (no active session: no). So
//! the same call from two apps of the same group is allowed for one and refused for the other,
//! by polkit's decision, and neither may switch eSIM profiles.

use std::path::PathBuf;

use aiesim_e2e::{Account, World, WorldOptions, output_text as text, repo_root, skip_unless_ready};

/// A file the test installs for polkitd and removes again (kept if it was there before).
struct Installed {
    path: PathBuf,
    created: bool,
}

impl Installed {
    fn write(path: &str, contents: &[u8]) -> Self {
        let path = PathBuf::from(path);
        let created = !path.exists();
        if created {
            std::fs::write(&path, contents).unwrap();
        }
        Self { path, created }
    }
}

impl Drop for Installed {
    fn drop(&mut self) {
        if self.created {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

#[tokio::test]
async fn polkit_decides_who_may_administer() {
    if skip_unless_ready("polkit_decides_who_may_administer") {
        return;
    }
    let group = Account::group("aiesim-apps").unwrap();
    let action = std::fs::read(repo_root().join("dbus/polkit/org.aiesim.AiEsim1.policy")).unwrap();
    let _action = Installed::write("/usr/share/polkit-1/actions/org.aiesim.AiEsim1.policy", &action);
    let rule = format!(
        "// aiesim e2e test {}\npolkit.addRule(function (action, subject) {{\n  if (action.id == \"org.aiesim.AiEsim1.manage-budgets\" && subject.user == \"nobody\") {{\n    return polkit.Result.YES;\n  }}\n}});\n",
        std::process::id()
    );
    let _rule = Installed::write("/etc/polkit-1/rules.d/49-aiesim-e2e-test.rules", rule.as_bytes());
    let mut world = World::start(&WorldOptions {
        polkit: true,
        ..WorldOptions::default()
    })
    .unwrap();
    let list = "org.aiesim.AiEsim1.Budget.List";

    let allowed = world.gdbus_as(65534, Some(group.gid), "/org/aiesim/AiEsim1", list, &[]);
    assert!(
        allowed.status.success(),
        "nobody has the rule's yes: {}",
        text(&allowed)
    );
    let refused = world.gdbus_as(1, Some(group.gid), "/org/aiesim/AiEsim1", list, &[]);
    assert!(!refused.status.success());
    let said = text(&refused);
    assert!(
        said.contains("Unauthorized") && said.contains("polkit does not authorize org.aiesim.AiEsim1.manage-budgets"),
        "{said}"
    );
    // Set, as List: the rule's user may change an app's limits, the other may not.
    let set = "org.aiesim.AiEsim1.Budget.Set";
    let policy = ["glasses.service", "{'daily': <uint64 500>, 'per_minute': <uint64 60>}"];
    let refused = world.gdbus_as(1, Some(group.gid), "/org/aiesim/AiEsim1", set, &policy);
    let said = text(&refused);
    assert!(
        !refused.status.success()
            && said.contains("Unauthorized")
            && said.contains("polkit does not authorize org.aiesim.AiEsim1.manage-budgets"),
        "{said}"
    );
    let list = world.aictl_json(&["budget", "list"]);
    assert!(
        !list.as_array().unwrap().iter().any(|r| r["app"] == "glasses.service"),
        "a refused Set changed nothing: {list:#}"
    );
    let allowed = world.gdbus_as(65534, Some(group.gid), "/org/aiesim/AiEsim1", set, &policy);
    assert!(
        allowed.status.success(),
        "nobody has the rule's yes: {}",
        text(&allowed)
    );
    let list = world.aictl_json(&["budget", "list"]);
    let row = list
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["app"] == "glasses.service")
        .unwrap_or_else(|| panic!("the policy is listed: {list:#}"));
    assert_eq!(
        (&row["daily_limit"], &row["per_minute"]),
        (&500.into(), &60.into()),
        "{row:#}"
    );
    let bad = world.gdbus_as(
        65534,
        Some(group.gid),
        "/org/aiesim/AiEsim1",
        set,
        &["glasses.service", "{'daily': <'lots'>}"],
    );
    assert!(
        text(&bad).contains("InvalidArgument") && text(&bad).contains("must have D-Bus type t, not s"),
        "{}",
        text(&bad)
    );
    let switch = world.gdbus_as(
        65534,
        Some(group.gid),
        "/org/aiesim/AiEsim1/Modem/0",
        "org.aiesim.AiEsim1.Esim.EnableProfile",
        &["8988211000000000025"],
    );
    assert!(
        !switch.status.success() && text(&switch).contains("manage-esim"),
        "the budgets rule gives nothing else: {}",
        text(&switch)
    );
    // Root is the administrator.
    let root = world.aictl().args(["esim", "top-up", "00"]).output().unwrap();
    assert!(
        text(&root).contains("112 bytes"),
        "root got past polkit to the voucher check: {}",
        text(&root)
    );
    assert!(
        world.polkit.as_mut().unwrap().try_wait().unwrap().is_none(),
        "polkitd kept running"
    );
    drop(world);
}
