//! Images in requests, through the real bus from a real python3-dbus client: a PNG in a memfd
//! and a JPEG in a file reach the test cloud byte for byte (it records their SHA-256), the
//! answer streams and is charged; a pipe, a non-image, an oversized memfd, a write-only fd, a
//! MIME type that lies and an unknown part type are each refused with `InvalidArgument`, charge
//! nothing, and another app's request is served meanwhile.

use std::{
    collections::HashMap,
    fmt::Write as _,
    io::Write as _,
    path::Path,
    process::{Command, Output},
};

use aiesim_dbus::{ErrorName, proxy::BudgetProxy};
use aiesim_e2e::{Account, CloudOptions, World, WorldOptions, output_text as text, skip_if_missing, skip_unless_ready};
use sha2::{Digest as _, Sha256};
use zbus::OwnedVariant;

/// Debian's python3, which has python3-dbus (`cargo xtask setup` installs it).
const PYTHON: &str = "/usr/bin/python3";

/// The app: `good PNG JPEG` sends both images in one Chat and prints every stream event;
/// `bad PNG WRITE_ONLY OVERSIZED` tries each bad input and prints one line per case with the
/// error it got.
const APP: &str = r#"
import json, os, socket, sys
import dbus
import dbus.bus

bus = dbus.bus.BusConnection(sys.argv[1])
broker = dbus.Interface(bus.get_object("org.aiesim.AiEsim1", "/org/aiesim/AiEsim1"), "org.aiesim.AiEsim1.Broker")

def text(t):
    return dbus.Dictionary({"type": "text", "text": t}, signature="sv")

def image(fd, mime=None):
    part = {"type": "image", "fd": dbus.types.UnixFd(fd)}
    if mime:
        part["mime"] = mime
    return dbus.Dictionary(part, signature="sv")

def chat(parts):
    message = dbus.Dictionary({"role": "user", "content": dbus.Array(parts, signature="a{sv}")}, signature="sv")
    request = {"messages": dbus.Array([message], signature="a{sv}"), "max_tokens": dbus.UInt32(8)}
    return broker.Chat(dbus.Dictionary(request, signature="sv"))

def memfd(data):
    fd = os.memfd_create("image")
    os.write(fd, data)
    return fd

def read(path):
    with open(path, "rb") as f:
        return f.read()

mode = sys.argv[2]
if mode == "good":
    png = memfd(read(sys.argv[3]))
    jpeg = os.open(sys.argv[4], os.O_RDONLY)
    _path, stream = chat([text("Describe these two pictures."), image(png, "image/png"), image(jpeg)])
    with socket.socket(fileno=stream.take()) as s, s.makefile("r") as lines:
        for line in lines:
            print(line.strip(), flush=True)
else:
    png = read(sys.argv[3])
    r, w = os.pipe()
    os.write(w, png)
    write_only = os.open(sys.argv[4], os.O_WRONLY)
    cases = [
        ("pipe", [text("look"), image(r)]),
        ("not an image", [text("look"), image(memfd(b"just some text, not a picture\n" * 8))]),
        ("oversized", [text("look"), image(memfd(read(sys.argv[5])))]),
        ("write-only", [text("look"), image(write_only)]),
        ("mime lies", [text("look"), image(memfd(png), "image/gif")]),
        ("unknown part", [text("look"), dbus.Dictionary({"type": "video", "text": "x"}, signature="sv")]),
    ]
    for case, parts in cases:
        try:
            chat(parts)
            print(json.dumps({"case": case, "error": None}), flush=True)
        except dbus.exceptions.DBusException as e:
            print(json.dumps({"case": case, "error": e.get_dbus_name(), "message": e.get_dbus_message()}), flush=True)
"#;

/// A real 16 x 16 RGB PNG: stored (uncompressed) deflate, CRCs over each chunk.
fn png() -> Vec<u8> {
    fn crc32(bytes: &[u8]) -> u32 {
        let mut crc = !0u32;
        for &b in bytes {
            crc ^= u32::from(b);
            for _ in 0..8 {
                crc = if crc & 1 == 1 {
                    (crc >> 1) ^ 0xedb8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }
    fn chunk(out: &mut Vec<u8>, kind: [u8; 4], data: &[u8]) {
        out.extend_from_slice(&u32::try_from(data.len()).unwrap().to_be_bytes());
        let start = out.len();
        out.extend_from_slice(&kind);
        out.extend_from_slice(data);
        let crc = crc32(&out[start..]);
        out.extend_from_slice(&crc.to_be_bytes());
    }
    let mut raw = Vec::new();
    for y in 0..16u8 {
        raw.push(0);
        for x in 0..16u8 {
            raw.extend_from_slice(&[x * 16, y * 16, 128]);
        }
    }
    let (mut a, mut b) = (1u32, 0u32);
    for &byte in &raw {
        a = (a + u32::from(byte)) % 65_521;
        b = (b + a) % 65_521;
    }
    let len = u16::try_from(raw.len()).unwrap();
    let mut zlib = vec![0x78, 0x01, 0x01];
    zlib.extend_from_slice(&len.to_le_bytes());
    zlib.extend_from_slice(&(!len).to_le_bytes());
    zlib.extend_from_slice(&raw);
    zlib.extend_from_slice(&((b << 16) | a).to_be_bytes());
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&16u32.to_be_bytes());
    ihdr.extend_from_slice(&16u32.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    chunk(&mut out, *b"IHDR", &ihdr);
    chunk(&mut out, *b"IDAT", &zlib);
    chunk(&mut out, *b"IEND", &[]);
    out
}

/// A JPEG's segments up to its frame header, then bytes standing for the scan: the daemon
/// reads only the header and the model reads no pixels, so nothing decodes it.
fn jpeg() -> Vec<u8> {
    let mut d = aiesim_wire::image::samples::jpeg(320, 240);
    d.truncate(d.len() - 2);
    d.extend_from_slice(&[0xff, 0xda, 0x00, 0x02]);
    d.extend((0..4000u32).map(|i| (i % 200) as u8));
    d.extend_from_slice(&[0xff, 0xd9]);
    d
}

/// A world whose cloud records each request's images; `extra_config` for the daemon.
fn recording_world(extra_config: &str) -> World {
    World::start(&WorldOptions {
        extra_config: extra_config.into(),
        cloud: CloudOptions {
            record: true,
            ..CloudOptions::default()
        },
        ..WorldOptions::default()
    })
    .unwrap()
}

fn sha256_hex(data: &[u8]) -> String {
    Sha256::digest(data).iter().fold(String::new(), |mut hex, b| {
        let _ = write!(hex, "{b:02x}");
        hex
    })
}

fn write(path: &Path, data: &[u8]) {
    std::fs::File::create(path).unwrap().write_all(data).unwrap();
}

fn app(world: &World, args: &[&Path]) -> Output {
    let out = Command::new(PYTHON)
        .arg("-c")
        .arg(APP)
        .arg(&world.bus_address)
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    out
}

fn json_lines(out: &Output) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}")))
        .collect()
}

async fn in_flight_and_spent(world: &World) -> (u32, u64) {
    let conn = world.connect().await.unwrap();
    let mine: HashMap<String, OwnedVariant> = BudgetProxy::new(&conn).await.unwrap().get_mine().await.unwrap();
    (
        u32::try_from(&mine["in_flight"]).unwrap(),
        u64::try_from(&mine["spent"]).unwrap(),
    )
}

fn skip(test: &str) -> bool {
    skip_unless_ready(test)
        || skip_if_missing(
            test,
            (!Path::new(PYTHON).exists()).then(|| format!("{PYTHON} (with python3-dbus) is not installed")),
        )
}

#[tokio::test]
async fn a_png_in_a_memfd_and_a_jpeg_in_a_file_reach_the_cloud_byte_for_byte() {
    if skip("a_png_in_a_memfd_and_a_jpeg_in_a_file_reach_the_cloud_byte_for_byte") {
        return;
    }
    let world = recording_world("");
    let (png, jpeg) = (png(), jpeg());
    let (png_path, jpeg_path) = (world.dir().join("picture.png"), world.dir().join("picture.jpg"));
    write(&png_path, &png);
    write(&jpeg_path, &jpeg);
    let spent_before = in_flight_and_spent(&world).await.1;

    let out = app(&world, &[Path::new("good"), &png_path, &jpeg_path]);
    let events = json_lines(&out);
    let (last, deltas) = events
        .split_last()
        .unwrap_or_else(|| panic!("no events: {}", text(&out)));
    assert_eq!(last["type"], "done", "{}\n{}", text(&out), world.daemon.log());
    assert!(
        !deltas.is_empty() && deltas.iter().all(|e| e["type"] == "delta"),
        "{events:?}"
    );
    let charged = last["charged"].as_u64().unwrap();
    assert!(charged > 0, "{last}");

    let records = world.cloud_records();
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(
        records[0]["images"],
        serde_json::json!([
            {"mime": "image/png", "bytes": png.len(), "sha256": sha256_hex(&png)},
            {"mime": "image/jpeg", "bytes": jpeg.len(), "sha256": sha256_hex(&jpeg)},
        ])
    );
    let (in_flight, spent) = in_flight_and_spent(&world).await;
    assert_eq!((in_flight, spent - spent_before), (0, charged));
}

#[tokio::test]
async fn bad_images_are_refused_charge_nothing_and_another_app_is_served() {
    if skip("bad_images_are_refused_charge_nothing_and_another_app_is_served") {
        return;
    }
    let group = Account::group("aiesim-apps").unwrap();
    let world = recording_world("[requests]\nmax_image_bytes = 65536\n");
    let png = png();
    let (png_path, write_only, oversized) = (
        world.dir().join("picture.png"),
        world.dir().join("write-only.png"),
        world.dir().join("big.png"),
    );
    write(&png_path, &png);
    write(&write_only, &png);
    let mut big = png.clone();
    big.resize(65_537, 0);
    write(&oversized, &big);
    let spent_before = in_flight_and_spent(&world).await.1;

    // Another app (user nobody in aiesim-apps, real gdbus) asks while the bad inputs come in.
    let other = {
        let (address, gid) = (world.bus_address.clone(), group.gid);
        std::thread::spawn(move || {
            Command::new("setpriv")
                .args(["--reuid=65534", "--regid=65534", &format!("--groups={gid}")])
                .args(["gdbus", "call", "--address", &address, "--dest", aiesim_dbus::BUS_NAME])
                .args(["--object-path", aiesim_dbus::ROOT_PATH])
                .args(["--method", "org.aiesim.AiEsim1.Broker.Ask", "Say hi."])
                .arg("{'max_tokens': <uint32 4>}")
                .output()
                .unwrap()
        })
    };
    let out = app(&world, &[Path::new("bad"), &png_path, &write_only, &oversized]);
    let expected = [
        ("pipe", "is a pipe, not a regular file or memfd"),
        ("not an image", "the data is not a PNG, JPEG, WebP or GIF image"),
        ("oversized", "more than the 65536 allowed"),
        ("write-only", "open for writing only"),
        ("mime lies", "declared image/gif but the data is image/png"),
        ("unknown part", "type must be \"text\" or \"image\", not \"video\""),
    ];
    let results = json_lines(&out);
    assert_eq!(results.len(), expected.len(), "{}", text(&out));
    for (result, (case, why)) in results.iter().zip(expected) {
        assert_eq!(result["case"], case);
        assert_eq!(result["error"], ErrorName::InvalidArgument.as_str(), "{result}");
        let message = result["message"].as_str().unwrap();
        assert!(
            message.contains(why) && message.contains("message 1 part 2"),
            "{case}: {message}"
        );
    }
    let other = other.join().unwrap();
    assert!(other.status.success(), "the other app was not served: {}", text(&other));
    assert_eq!(
        world.cloud_records().len(),
        1,
        "only the other app's request reached the cloud"
    );
    assert_eq!(in_flight_and_spent(&world).await, (0, spent_before), "nothing charged");
}

#[test]
fn aictl_ask_passes_its_image_files() {
    if skip_unless_ready("aictl_ask_passes_its_image_files") {
        return;
    }
    let world = recording_world("");
    let (png, jpeg) = (png(), jpeg());
    let (png_path, jpeg_path, not_image) = (
        world.dir().join("picture.png"),
        world.dir().join("picture.jpg"),
        world.dir().join("notes.txt"),
    );
    write(&png_path, &png);
    write(&jpeg_path, &jpeg);
    write(&not_image, b"not a picture\n");
    let ask = |images: &[&Path]| {
        let mut cmd = world.aictl();
        cmd.args(["ask", "--max-tokens", "4"]);
        for image in images {
            cmd.arg("--image").arg(image);
        }
        cmd.arg("What is in these pictures?").output().unwrap()
    };

    let out = ask(&[&png_path, &jpeg_path]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(!out.stdout.is_empty(), "the answer streams to stdout: {}", text(&out));
    let records = world.cloud_records();
    assert_eq!(
        records.last().unwrap()["images"],
        serde_json::json!([
            {"mime": "image/png", "bytes": png.len(), "sha256": sha256_hex(&png)},
            {"mime": "image/jpeg", "bytes": jpeg.len(), "sha256": sha256_hex(&jpeg)},
        ])
    );

    let out = ask(&[&not_image]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("not a PNG, JPEG, WebP or GIF image"), "{stderr}");
    let out = ask(&[&world.dir().join("missing.png")]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("cannot open the image") && stderr.contains("missing.png"),
        "{stderr}"
    );
    assert_eq!(
        world.cloud_records().len(),
        records.len(),
        "refused requests reach no cloud"
    );
}
