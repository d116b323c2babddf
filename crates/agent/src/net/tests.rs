use super::*;
use hearth_agent_proto::v1::{NetworkInterface, NetworkRoute};

fn request() -> ConfigureNetworkRequest {
    ConfigureNetworkRequest {
        interfaces: vec![NetworkInterface {
            mac: "0A:58:0a:01:02:03".into(),
            name: "eth0".into(),
            mtu: 1450,
            addresses: vec!["10.1.2.3/24".into(), "fd00::3/64".into()],
        }],
        routes: vec![
            NetworkRoute {
                destination: "0.0.0.0/0".into(),
                gateway: "10.1.2.1".into(),
                device: "eth0".into(),
            },
            NetworkRoute {
                destination: "::/0".into(),
                gateway: String::new(),
                device: "eth0".into(),
            },
        ],
    }
}

#[test]
fn a_pod_request_parses() {
    let plan = Plan::parse(&request()).unwrap();
    let i = &plan.interfaces[0];
    assert_eq!(i.mac, [0x0a, 0x58, 0x0a, 1, 2, 3]);
    assert_eq!(i.name.as_deref(), Some("eth0"));
    assert_eq!(i.mtu, Some(1450));
    assert_eq!(
        i.addresses,
        [
            Cidr {
                addr: "10.1.2.3".parse().unwrap(),
                prefix: 24
            },
            Cidr {
                addr: "fd00::3".parse().unwrap(),
                prefix: 64
            }
        ]
    );
    assert_eq!(i.addresses[0].v4_mask(), Ipv4Addr::new(255, 255, 255, 0));
    assert_eq!(plan.routes[0].gateway, Some("10.1.2.1".parse().unwrap()));
    assert_eq!(plan.routes[0].destination.prefix, 0);
    assert_eq!(plan.routes[1].gateway, None);
}

#[test]
fn masks_of_every_prefix() {
    let c = |p| Cidr {
        addr: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        prefix: p,
    };
    assert_eq!(c(0).v4_mask(), Ipv4Addr::UNSPECIFIED);
    assert_eq!(c(16).v4_mask(), Ipv4Addr::new(255, 255, 0, 0));
    assert_eq!(c(32).v4_mask(), Ipv4Addr::BROADCAST);
    assert_eq!(mask_len(c(20).v4_mask()), 20);
}

#[test]
fn bad_fields_are_named() {
    let field_of = |f: &dyn Fn(&mut ConfigureNetworkRequest)| {
        let mut r = request();
        f(&mut r);
        match Plan::parse(&r).unwrap_err() {
            NetError::Invalid { field, .. } => field,
            e => panic!("{e}"),
        }
    };
    assert_eq!(
        field_of(&|r| r.interfaces[0].mac = "0a:58:0a:01:02".into()),
        "interfaces.mac"
    );
    assert_eq!(
        field_of(&|r| r.interfaces[0].mac = "0a:58:0a:01:02:03:04".into()),
        "interfaces.mac"
    );
    assert_eq!(
        field_of(&|r| r.interfaces[0].mac = "0a:58:0a:01:02:zz".into()),
        "interfaces.mac"
    );
    assert_eq!(
        field_of(&|r| r.interfaces[0].name = "a-name-far-too-long".into()),
        "interfaces.name"
    );
    assert_eq!(
        field_of(&|r| r.interfaces[0].name = "eth0:1".into()),
        "interfaces.name"
    );
    assert_eq!(field_of(&|r| r.interfaces[0].mtu = 20), "interfaces.mtu");
    for bad in [
        "10.1.2.3",
        "10.1.2.3/33",
        "fd00::1/129",
        "x/24",
        "10.1.2.3/-1",
    ] {
        assert_eq!(
            field_of(&|r| r.interfaces[0].addresses = vec![bad.into()]),
            "interfaces.addresses",
            "{bad}"
        );
    }
    assert_eq!(
        field_of(&|r| r.routes[0].destination = "default".into()),
        "routes.destination"
    );
    assert_eq!(
        field_of(&|r| r.routes[0].gateway = "fd00::1".into()),
        "routes.gateway"
    );
    assert_eq!(
        field_of(&|r| r.routes[0].device = String::new()),
        "routes.device"
    );
}

#[test]
fn nics_are_found_by_mac_in_sysfs() {
    let dir = tempfile::tempdir().unwrap();
    for (name, mac) in [("lo", "00:00:00:00:00:00"), ("eth3", "0a:58:0a:01:02:03")] {
        std::fs::create_dir(dir.path().join(name)).unwrap();
        std::fs::write(dir.path().join(name).join("address"), format!("{mac}\n")).unwrap();
    }
    std::fs::create_dir(dir.path().join("odd")).unwrap();
    let mac = parse_mac("0a:58:0a:01:02:03").unwrap();
    assert_eq!(
        find_by_mac(dir.path(), &mac).unwrap().as_deref(),
        Some("eth3")
    );
    assert_eq!(find_by_mac(dir.path(), &[2, 0, 0, 0, 0, 1]).unwrap(), None);
    assert_eq!(format_mac(&mac), "0a:58:0a:01:02:03");
}
