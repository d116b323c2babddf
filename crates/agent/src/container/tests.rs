use super::*;
use hearth_agent_proto::v1::ContainerUser;

#[test]
fn ids_are_checked() {
    assert!(validate_id("abc123").is_ok());
    for bad in ["", "ABC", "a/b", "../x", &"a".repeat(65)] {
        assert!(validate_id(bad).is_err(), "{bad}");
    }
}

#[test]
fn processes_are_checked() {
    let ok = ContainerProcess {
        args: vec!["sh".into()],
        env: vec!["A=b".into(), "EMPTY=".into()],
        cwd: "/".into(),
        user: Some(ContainerUser::default()),
        capabilities: None,
    };
    assert!(validate_process(&ok, true).is_ok());
    let mut p = ok.clone();
    p.args.clear();
    assert!(validate_process(&p, true).is_err());
    let mut p = ok.clone();
    p.env.push("NOEQUALS".into());
    assert!(validate_process(&p, true).is_err());
    let mut p = ok.clone();
    p.cwd = "rel".into();
    assert!(validate_process(&p, true).is_err());
    p.cwd = String::new();
    assert!(validate_process(&p, false).is_ok());
    p.capabilities = Some(hearth_agent_proto::v1::Capabilities {
        add: vec!["CAP_NOPE".into()],
        drop: vec![],
    });
    assert!(validate_process(&p, false).is_err());
    assert!(validate_process(&p, true).is_err());
}

#[tokio::test]
async fn unknown_containers() {
    let cs = Containers::new(
        Reaper::new(),
        Paths::default(),
        Arc::new(Volumes::default()),
    );
    assert!(matches!(
        cs.start("nope").await,
        Err(ContainerError::NotFound(_))
    ));
    assert!(cs.remove("nope").await.is_ok());
    assert!(matches!(
        cs.signal("nope", 15),
        Err(ContainerError::NotFound(_))
    ));
    assert!(matches!(
        cs.signal("nope", 99),
        Err(ContainerError::Invalid { .. })
    ));
}
