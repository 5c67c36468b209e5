//! Annotation keys the store reads when it names images from an OCI layout (a bundle)
//! and from a CloudImage (`docs/cloudimage.md`, `docs/bundle.md`).

/// On an `index.json` entry: the image's fully qualified reference, as containerd's
/// `ctr import` and sealer read it.
pub const IMAGE_NAME: &str = "io.containerd.image.name";
/// On an `index.json` entry: its reference (or just a tag), as OCI tools, skopeo
/// (`oci-archive:FILE:REF`) and oras (`--oci-layout FILE:REF`) look it up.
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";
/// On each CloudImage index entry: `rootfs` or `container-image`.
pub const ROLE: &str = "sealer.image.role";
pub const ROLE_ROOTFS: &str = "rootfs";
pub const ROLE_CONTAINER_IMAGE: &str = "container-image";
/// On a CloudImage's container-image entry: that image's fully qualified reference.
pub const CONTAINER_REFERENCE: &str = "sealer.image.container.reference";
