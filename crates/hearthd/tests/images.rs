//! The CRI ImageService end to end: a real registry on 127.0.0.1 (Debian's
//! docker-registry), an image the test builds and pushes with skopeo,
//! pulled through hearthd's CRI socket into an erofs block image.

mod common;
#[path = "../../image/tests/common/mod.rs"]
mod registry;

use common::*;
use k8s_cri::v1 as cri;
use k8s_cri::v1::image_service_client::ImageServiceClient;
use registry::{busybox_layer, Comp, Layer, Layout, Registry};
use tonic::Code;

fn spec(image: &str) -> Option<cri::ImageSpec> {
    Some(cri::ImageSpec {
        image: image.into(),
        ..Default::default()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_status_list_remove_through_the_cri() {
    if hearth_test_support::skip_unless_root("images") {
        return;
    }
    if let Some(why) = registry::need(&["docker-registry", "skopeo", "mkfs.erofs"], true) {
        eprintln!("images: skipped: {why}");
        return;
    }
    let reg = Registry::start(Some(("hearth", "s3cret")));
    let mut layout = Layout::new();
    let built = layout.image(
        &[Layer::new(busybox_layer(), Comp::Gzip)],
        "amd64",
        "1000",
        serde_json::json!({}),
    );
    layout.tag(&built.desc, "v1");
    reg.push(layout.path(), "v1", "demo/busybox", &[]);
    let reference = format!("{}/demo/busybox:v1", reg.host());

    let env = Env::new();
    let daemon = Daemon::start(&env).await;
    let mut images = ImageServiceClient::new(daemon.channel.clone());

    // 401 without credentials: Unauthenticated, nothing stored.
    let e = images
        .pull_image(cri::PullImageRequest {
            image: spec(&reference),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
    let list = images
        .list_images(cri::ListImagesRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(list.images.is_empty());

    // With the kubelet's AuthConfig.
    let auth = cri::AuthConfig {
        username: "hearth".into(),
        password: "s3cret".into(),
        ..Default::default()
    };
    let id = images
        .pull_image(cri::PullImageRequest {
            image: spec(&reference),
            auth: Some(auth),
            sandbox_config: None,
        })
        .await
        .unwrap()
        .into_inner()
        .image_ref;
    assert!(id.starts_with("sha256:"), "{id}");

    // ImageStatus: tags, digests, size, the user as a uid (runAsNonRoot).
    let st = images
        .image_status(cri::ImageStatusRequest {
            image: spec(&reference),
            verbose: true,
        })
        .await
        .unwrap()
        .into_inner();
    let img = st.image.expect("image present");
    assert_eq!(img.id, id);
    assert_eq!(img.repo_tags, vec![reference.clone()]);
    assert_eq!(img.repo_digests.len(), 1);
    assert!(img.repo_digests[0].contains("@sha256:"));
    assert!(img.size > 0);
    assert_eq!(img.uid, Some(cri::Int64Value { value: 1000 }));
    let info: serde_json::Value = serde_json::from_str(&st.info["info"]).unwrap();
    let erofs = std::path::PathBuf::from(info["erofsImage"].as_str().unwrap());
    assert!(erofs.starts_with(&env.config.root), "{erofs:?}");
    assert_eq!(
        std::fs::metadata(&erofs).unwrap().len(),
        info["erofsSize"].as_u64().unwrap()
    );

    // By id and by id prefix; listing with and without a filter.
    for q in [
        id.clone(),
        id["sha256:".len().."sha256:".len() + 12].to_string(),
    ] {
        let st = images
            .image_status(cri::ImageStatusRequest {
                image: spec(&q),
                verbose: false,
            })
            .await
            .unwrap();
        assert_eq!(st.into_inner().image.unwrap().id, id);
    }
    let list = images
        .list_images(cri::ListImagesRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(list.images.len(), 1);
    let filtered = images
        .list_images(cri::ListImagesRequest {
            filter: Some(cri::ImageFilter {
                image: spec("nothing:here"),
            }),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(filtered.images.is_empty());

    // ImageFsInfo reports the store's real usage.
    let fs = images
        .image_fs_info(cri::ImageFsInfoRequest {})
        .await
        .unwrap()
        .into_inner();
    let used = fs.image_filesystems[0].used_bytes.as_ref().unwrap().value;
    assert!(used >= std::fs::metadata(&erofs).unwrap().len(), "{used}");

    // Remove by tag; a second remove is fine; status is then empty.
    images
        .remove_image(cri::RemoveImageRequest {
            image: spec(&reference),
        })
        .await
        .unwrap();
    images
        .remove_image(cri::RemoveImageRequest {
            image: spec(&reference),
        })
        .await
        .unwrap();
    let st = images
        .image_status(cri::ImageStatusRequest {
            image: spec(&id),
            verbose: false,
        })
        .await
        .unwrap();
    assert!(st.into_inner().image.is_none());
    assert!(!erofs.exists(), "erofs image left after RemoveImage");

    // Bad input: an empty spec, a malformed reference, a registry that is down.
    let e = images
        .pull_image(cri::PullImageRequest::default())
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    let e = images
        .pull_image(cri::PullImageRequest {
            image: spec("UPPER/case:bad"),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    let e = images
        .pull_image(cri::PullImageRequest {
            image: spec("127.0.0.1:1/none:v1"),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unavailable, "{e:?}");

    drop(images);
    daemon.shutdown().await;
}
