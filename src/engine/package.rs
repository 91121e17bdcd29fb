//! What an AOTInductor package holds for each model, read from the archive
//! (its files, metadata, and the input checks Inductor compiled into its
//! source), and the checks on its files before libtorch's loader unpacks
//! them: the loader ignores checksums, maps a library without checking that
//! the file holds it, and fails after unpacking with messages that may not
//! name the folder it leaves.

use std::path::Path;

use crate::error::{Error, ErrorKind, Result};
use crate::json::Json;
use crate::model_file::open_regular;
use crate::zip::{Entry, Zip};

/// What an AOTInductor package holds for one model.
#[derive(Clone, Debug, Default)]
pub struct PackageModel {
    pub name: String,
    pub files: Vec<String>,
    pub has_library: bool,
    /// The `*_metadata.json` the compiler wrote, when perfopt could read it.
    pub metadata: Option<Json>,
    /// Per input, per dimension, the (lowest, highest) sizes the compiled
    /// code accepts, read from its input checks; empty when unknown.
    pub size_bounds: Vec<Vec<(Option<i64>, Option<i64>)>>,
    /// Per input, the dtype its compiled checks want ("float32"), when read.
    pub input_dtypes: Vec<Option<String>>,
    /// Per input, its rank, when read from the compiled checks.
    pub input_ranks: Vec<Option<usize>>,
    /// Its files' records, for [`check_model_files`].
    pub(crate) entries: Vec<Entry>,
}

pub(crate) fn package_models(zip: &mut Zip<'_>, entries: &[Entry]) -> Result<Vec<PackageModel>> {
    let shown = zip.shown.clone();
    // libtorch's loader reads the first two names without checking that
    // there are two (a one-file archive crashes it), and writes each name
    // under its temporary folder as it is (".." would climb out).
    if entries.len() < 2 {
        return Err(zip.corrupt("an AOTInductor package with fewer than two files"));
    }
    if let Some(bad) = entries
        .iter()
        .find(|e| e.name.starts_with('/') || e.name.split(['/', '\\']).any(|part| part == ".."))
    {
        return Err(Error::new(
            ErrorKind::ModelCorrupt,
            format!(
                "{shown} holds a file named {:?}, which would be written outside the folder it is \
                 unpacked into: refused",
                bad.name
            ),
        ));
    }
    let mut models: Vec<PackageModel> = Vec::new();
    for entry in entries {
        let Some(at) = entry.name.find("data/aotinductor/") else {
            continue;
        };
        let rest = &entry.name[at + "data/aotinductor/".len()..];
        let Some((model, file)) = rest.split_once('/') else {
            continue;
        };
        if file.is_empty() {
            continue;
        }
        let index = match models.iter().position(|m| m.name == model) {
            Some(i) => i,
            None => {
                models.push(PackageModel {
                    name: model.to_string(),
                    ..Default::default()
                });
                models.len() - 1
            }
        };
        let m = &mut models[index];
        m.files.push(file.to_string());
        m.entries.push(entry.clone());
        m.has_library |= file.ends_with(".so");
        if file.ends_with(".wrapper.cpp") && m.size_bounds.is_empty() {
            if let Some(bytes) = zip.stored(entry)? {
                let wrapper = String::from_utf8_lossy(&bytes);
                m.size_bounds = size_bounds(&wrapper);
                m.input_dtypes = input_dtypes(&wrapper);
                m.input_ranks = input_ranks(&wrapper);
            }
        }
        if file.ends_with("_metadata.json") && m.metadata.is_none() && !file.contains("kernel") {
            if let Some(bytes) = zip.stored(entry)? {
                m.metadata = std::str::from_utf8(&bytes)
                    .ok()
                    .and_then(|text| Json::parse(text).ok());
            }
        }
    }
    Ok(models)
}

/// The entries libtorch's loader unpacks for `model`: under the archive's
/// top folder, every name that starts with `data/aotinductor/<model>` (a
/// plain prefix: `model_x/...` and `model.so` too) or `data/constants/`.
fn loader_entries<'a>(entries: &'a [Entry], model: &str) -> Vec<&'a Entry> {
    let top = entries
        .first()
        .and_then(|e| e.name.split_once('/'))
        .map_or("", |(top, _)| top);
    let wanted = format!("data/aotinductor/{model}");
    entries
        .iter()
        .filter(|e| {
            let rest = e.name.strip_prefix(top).and_then(|r| r.strip_prefix('/'));
            rest.is_some_and(|r| r.starts_with(&wanted) || r.starts_with("data/constants/"))
        })
        .collect()
}

/// Checks what libtorch's loader will unpack for `model` (it ignores
/// checksums, takes the last library it unpacks, and fails after unpacking
/// with messages that may not name its folder) and the library (which the
/// dynamic loader maps without checking that the file holds it): one folder
/// at the top, every stored file's CRC, exactly one library, stored and with
/// its ELF headers and segments within the file, and each source's metadata.
/// `path` is what to open (the checked file's descriptor path), `shown`
/// what messages name.
pub fn check_model_files(path: &Path, shown: &str, model: &PackageModel) -> Result<()> {
    let (mut file, size) = open_regular(path)?;
    let mut zip = Zip {
        file: &mut file,
        size,
        shown: shown.to_string(),
    };
    let corrupt = |zip: &Zip<'_>, what: String| {
        Error::new(
            ErrorKind::ModelCorrupt,
            format!("the package {} {what} (export it again)", zip.shown),
        )
    };
    let entries = zip.entries()?;
    let top = entries
        .first()
        .and_then(|e| e.name.split_once('/'))
        .map(|(top, _)| format!("{top}/"));
    if let Some(stray) = entries
        .iter()
        .find(|e| top.as_ref().is_none_or(|t| !e.name.starts_with(t.as_str())))
    {
        return Err(corrupt(
            &zip,
            format!("holds {} outside its top folder", stray.name),
        ));
    }
    let unpacked = loader_entries(&entries, &model.name);
    let names: Vec<&str> = unpacked.iter().map(|e| e.name.as_str()).collect();
    let libraries = names.iter().filter(|n| n.ends_with(".so")).count();
    if libraries != 1 {
        return Err(corrupt(
            &zip,
            format!(
                "holds {libraries} libraries for model \"{}\" where libtorch's loader takes one",
                model.name
            ),
        ));
    }
    let sources: Vec<&str> = names
        .iter()
        .filter_map(|n| n.strip_suffix(".cpp"))
        .collect();
    let missing = match sources.as_slice() {
        [] => Some("its generated sources (*.cpp)".to_string()),
        _ => sources
            .iter()
            .map(|stem| format!("{stem}_metadata.json"))
            .find(|wanted| !names.contains(&wanted.as_str())),
    };
    if let Some(missing) = missing {
        return Err(corrupt(
            &zip,
            format!(
                "lacks {missing} for model \"{}\", which libtorch's loader needs",
                model.name
            ),
        ));
    }
    check_room_to_unpack(&zip.shown, &unpacked)?;
    let mut device_keys: Vec<String> = Vec::new();
    for entry in unpacked {
        if entry.name.ends_with("_metadata.json") {
            device_keys.push(loader_metadata(&mut zip, entry)?);
        }
        let library = entry.name.ends_with(".so");
        if entry.method != 0 {
            if library {
                return Err(Error::new(
                    ErrorKind::UnsupportedModel,
                    format!(
                        "the package {} holds its library {} compressed: perfopt checks a \
                         package's library before loading it and needs it stored, as torch \
                         writes it (re-zip with `zip -0`, or export it again)",
                        zip.shown, entry.name
                    ),
                ));
            }
            continue;
        }
        zip.check_stored(entry)?;
        if library {
            let name = format!(
                "{} in {}",
                entry.name.rsplit('/').next().unwrap_or(&entry.name),
                zip.shown
            );
            crate::elf::check_library(&name, entry.compressed, &mut |offset, len| {
                zip.read_within(entry, offset, len)
            })?;
        }
    }
    device_keys.sort();
    device_keys.dedup();
    if device_keys.len() > 1 {
        return Err(corrupt(
            &zip,
            format!(
                "names several devices ({}) for model \"{}\"",
                device_keys.join(", "),
                model.name
            ),
        ));
    }
    Ok(())
}

/// What libtorch's loader needs of a metadata file (it fails on anything
/// else, after unpacking, with a message that does not name its folder): a
/// JSON object of strings naming the device. Returns the device.
fn loader_metadata(zip: &mut Zip<'_>, entry: &Entry) -> Result<String> {
    let bad = |zip: &Zip<'_>, what: &str| {
        Error::new(
            ErrorKind::ModelCorrupt,
            format!(
                "the package {} has a broken {}: {what}",
                zip.shown, entry.name
            ),
        )
    };
    let Some(bytes) = zip.stored(entry)? else {
        return Err(bad(zip, "it is compressed or too large to check"));
    };
    let json = std::str::from_utf8(&bytes)
        .ok()
        .and_then(|text| Json::parse(text).ok())
        .ok_or_else(|| bad(zip, "not JSON"))?;
    let Json::Object(fields) = &json else {
        return Err(bad(zip, "not a JSON object"));
    };
    if fields.iter().any(|(_, value)| value.as_str().is_none()) {
        return Err(bad(zip, "a value that is not a string"));
    }
    match json.get("AOTI_DEVICE_KEY").and_then(Json::as_str) {
        Some(key) if !key.is_empty() => Ok(key.to_string()),
        _ => Err(bad(zip, "no AOTI_DEVICE_KEY")),
    }
}

/// The dtype each input's compiled check wants (`int32_t argN_expected_dtype
/// = aoti_torch_dtype_float32();` in `check_input_K`), by input.
pub fn input_dtypes(wrapper: &str) -> Vec<Option<String>> {
    per_input(wrapper, |body| {
        body.lines()
            .find(|line| line.contains("_expected_dtype = aoti_torch_dtype_"))
            .and_then(|line| line.split("aoti_torch_dtype_").nth(1))
            .and_then(|rest| rest.split('(').next())
            .map(str::to_string)
    })
}

/// Each input's rank, from its compiled stride checks (`argN_stride[K]`:
/// Inductor checks every dimension's stride of a contiguous input).
pub fn input_ranks(wrapper: &str) -> Vec<Option<usize>> {
    per_input(wrapper, |body| {
        body.split("_stride[")
            .skip(1)
            .filter_map(|rest| rest.split(']').next()?.parse::<usize>().ok())
            .filter(|&k| k < MAX_RANK)
            .max()
            .map(|k| k + 1)
    })
}

/// The most a package may unpack: far above any real model, far below what
/// a zip bomb declares.
const MAX_UNPACKED_BYTES: u64 = 256 << 30;
/// Left free in /tmp after the unpack, for everything else on the machine.
const TMP_RESERVE_BYTES: u64 = 64 << 20;

/// libtorch's loader unpacks into /tmp (mkdtemp("/tmp/XXXXXX")) whatever
/// the archive declares, and a load that fills /tmp fails part way, leaving
/// its partial files (a 1.4 MB zip bomb filled a 256 MiB /tmp). The declared
/// sizes are checked against a bound and the free space first.
fn check_room_to_unpack(shown: &str, unpacked: &[&Entry]) -> Result<()> {
    let declared = unpacked
        .iter()
        .fold(0u64, |sum, e| sum.saturating_add(e.uncompressed));
    if declared > MAX_UNPACKED_BYTES {
        return Err(Error::new(
            ErrorKind::ModelCorrupt,
            format!(
                "the package {} declares {} GiB of files to unpack, more than any model \
                 (at most {} GiB): a damaged or hostile archive",
                shown,
                declared >> 30,
                MAX_UNPACKED_BYTES >> 30
            ),
        ));
    }
    if let Some(free) = crate::model_file::free_bytes(Path::new("/tmp")) {
        if declared.saturating_add(TMP_RESERVE_BYTES) > free {
            return Err(Error::new(
                ErrorKind::LoadFailed,
                format!(
                    "the package {} unpacks {} MiB into /tmp (libtorch's loader unpacks there), \
                     and /tmp has {} MiB free (perfopt leaves {} MiB): free space in /tmp",
                    shown,
                    declared >> 20,
                    free >> 20,
                    TMP_RESERVE_BYTES >> 20
                ),
            ));
        }
    }
    Ok(())
}

/// The most inputs, and dimensions per input, read from a package's text.
/// Indices come from a file others made and size the vectors below: past
/// these bounds an entry is not read (a `check_input_999999999999` would ask
/// for terabytes, and a failed allocation aborts the host). The package's own
/// compiled checks still run on what perfopt does not read.
const MAX_INPUTS: usize = 4096;
const MAX_RANK: usize = 64;

/// `read` applied to the body of each `static void check_input_K(...)`,
/// by input K.
fn per_input<T: Clone + Default>(wrapper: &str, read: impl Fn(&str) -> T) -> Vec<T> {
    let mut found: Vec<T> = Vec::new();
    for block in wrapper.split("static void check_input_").skip(1) {
        let Some(index) = block
            .split(|c: char| !c.is_ascii_digit())
            .next()
            .and_then(|n| n.parse::<usize>().ok())
            .filter(|&n| n < MAX_INPUTS)
        else {
            continue;
        };
        let body = block.split("\n}\n").next().unwrap_or("");
        if found.len() <= index {
            found.resize(index + 1, T::default());
        }
        found[index] = read(body);
    }
    found
}

/// The size bounds Inductor compiled into a package's input checks
/// (`static void check_input_K(...)` with `if (argN_size[D] > MAX)`,
/// `if (argN_size[D] < MIN)` and, for a static size,
/// `if (N != argN_size[D])`): Inductor may bound a dynamic dimension more
/// tightly than the export asked (a vocoder's batch at 15), and a run outside
/// them fails with a generic message. Text it does not recognise gives none.
pub fn size_bounds(wrapper: &str) -> Vec<Vec<(Option<i64>, Option<i64>)>> {
    per_input(wrapper, |body| {
        let mut dims: Vec<(Option<i64>, Option<i64>)> = Vec::new();
        for line in body.lines() {
            let Some(rest) = line.trim().strip_prefix("if (") else {
                continue;
            };
            let Some((condition, _)) = rest.split_once(") {") else {
                continue;
            };
            // `N != argK_size[D]` fixes a static dimension.
            let (sizes, op, limit) = match condition.split_once(" > ") {
                Some((a, b)) => (a, '>', b),
                None => match condition.split_once(" < ") {
                    Some((a, b)) => (a, '<', b),
                    None => match condition.split_once(" != ") {
                        Some((a, b)) => (b, '=', a),
                        None => continue,
                    },
                },
            };
            let Some(dim) = sizes
                .split_once("_size[")
                .and_then(|(_, d)| d.strip_suffix(']'))
                .and_then(|d| d.parse::<usize>().ok())
                .filter(|&d| d < MAX_RANK)
            else {
                continue;
            };
            let Ok(limit) = limit.trim().parse::<i64>() else {
                continue;
            };
            if dims.len() <= dim {
                dims.resize(dim + 1, (None, None));
            }
            match op {
                '>' => dims[dim].1 = Some(limit),
                '<' => dims[dim].0 = Some(limit),
                _ => dims[dim] = (Some(limit), Some(limit)),
            }
        }
        dims
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_a_package_unpacks_is_bounded_by_its_declared_sizes_and_free_space() {
        let entry = |size: u64| Entry {
            name: "p/data/aotinductor/m/big.bin".into(),
            method: 8,
            compressed: 1 << 10,
            uncompressed: size,
            crc: 0,
            local_header: 0,
        };
        // A zip bomb's declared size: refused before anything is unpacked.
        let bomb = entry(1 << 50);
        let err = check_room_to_unpack("bomb.pt2", &[&bomb]).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::ModelCorrupt, "{err}");
        // More than /tmp has free: refused, saying so.
        let free = crate::model_file::free_bytes(Path::new("/tmp")).unwrap();
        if free < MAX_UNPACKED_BYTES {
            let too_big = entry(free);
            let err = check_room_to_unpack("big.pt2", &[&too_big]).unwrap_err();
            assert!(err.to_string().contains("free space in /tmp"), "{err}");
        }
        let small = entry(1 << 20);
        check_room_to_unpack("small.pt2", &[&small]).unwrap();
    }

    #[test]
    fn indices_from_the_text_are_bounded_before_they_size_anything() {
        // Before: each asked for a vector of ~10^12 entries (an abort).
        let huge =
            "static void check_input_999999999999(\n) {\n    if (arg0_size[0] > 3) {\n    }\n}\n";
        assert!(size_bounds(huge).is_empty());
        assert!(input_dtypes(huge).is_empty());
        let deep =
            "static void check_input_0(\n) {\n    if (arg0_size[999999999999] > 3) {\n    }\n    \
                    if (1 != arg0_stride[999999999999]) {\n    }\n}\n";
        assert_eq!(size_bounds(deep), vec![Vec::new()]);
        assert_eq!(input_ranks(deep), vec![None]);
        // The largest index within the bounds is still read.
        let last = format!(
            "static void check_input_{}(\n) {{\n    if (arg0_size[63] > 3) {{\n    }}\n}}\n",
            MAX_INPUTS - 1
        );
        let bounds = size_bounds(&last);
        assert_eq!(bounds.len(), MAX_INPUTS);
        assert_eq!(bounds[MAX_INPUTS - 1][63], (None, Some(3)));
    }

    #[test]
    fn reads_the_size_bounds_compiled_into_a_package() {
        let wrapper = "AOTI_NOINLINE static void check_input_0(\n    AtenTensorHandle* input_handles\n) {\n    auto arg16_1_size = arg16_1.sizes();\n\n    if (arg16_1_size[0] > 15) {\n        throw;\n    }\n\n    if (arg16_1_size[0] < 2) {\n        throw;\n    }\n    if (80 != arg16_1_size[1]) {\n    }\n}\nstatic void check_input_1(\n) {\n}\n";
        let bounds = size_bounds(wrapper);
        assert_eq!(bounds[0], vec![(Some(2), Some(15)), (Some(80), Some(80))]);
        assert!(size_bounds("nothing to see").is_empty());
        let checks = "static void check_input_0(\n) {\n    int32_t arg4_1_expected_dtype = aoti_torch_dtype_float32();\n}\nstatic void check_input_1(\n) {\n}\n";
        assert_eq!(
            input_dtypes(checks),
            vec![Some("float32".to_string()), None]
        );
        assert_eq!(input_ranks(wrapper), vec![None, None], "no stride checks");
        let strided = "static void check_input_0(\n) {\n    if (16 != arg4_1_stride[0]) {\n    }\n    if (1 != arg4_1_stride[1]) {\n    }\n}\n";
        assert_eq!(input_ranks(strided), vec![Some(2)]);
    }
}
