//! File System Activity (1001): file opens, and new names for files
//! (hard and symbolic links, renames).

use std::borrow::Cow;

use crate::event::{Access, FileLink, FileOpen};

use super::objects::{FileObj, base_name};
use super::{Activity, Class, OcsfEvent, status};

const FILE_ACTIVITY: Class = Class {
    uid: 1001,
    name: "File System Activity",
    category_uid: 1,
    category_name: "System Activity",
};

pub(super) fn open<'a>(r: &mut OcsfEvent<'a>, x: &'a FileOpen) -> (Class, Activity) {
    r.file = Some(FileObj {
        name: base_name(&x.path),
        path: &x.path,
        type_id: 0,
    });
    let ok = x.error.is_none() && !x.blocked;
    let (id, name) = status(ok);
    (r.status_id, r.status) = (Some(id), Some(name));
    r.status_code = x.error.as_deref();
    if x.blocked {
        r.status_detail = Some(Cow::Borrowed(
            "killed at the open before it used the file (revoked, or no task approval)",
        ));
    }
    r.count = Some(if x.repeat_summary {
        x.repeats
    } else {
        1 + x.repeats
    });
    let activity = match x.access {
        Access::Read => (2, "Read"),
        Access::Write | Access::ReadWrite => (3, "Update"),
    };
    (FILE_ACTIVITY, activity)
}

/// A link is a file created (the new name), a rename a file renamed (from
/// the old name to the new).
pub(super) fn link<'a>(r: &mut OcsfEvent<'a>, x: &'a FileLink) -> (Class, Activity) {
    let new = FileObj {
        name: base_name(&x.path),
        path: &x.path,
        // 7 Symbolic Link; a hard link is whatever the file is.
        type_id: if x.op == "symlink" { 7 } else { 0 },
    };
    let activity = if x.op == "rename" {
        r.file = Some(FileObj {
            name: base_name(&x.target),
            path: &x.target,
            type_id: 0,
        });
        r.file_result = Some(new);
        (5, "Rename")
    } else {
        r.file = Some(new);
        (1, "Create")
    };
    let ok = x.error.is_none() && !x.blocked;
    let (id, name) = status(ok);
    (r.status_id, r.status) = (Some(id), Some(name));
    r.status_code = x.error.as_deref();
    if x.blocked {
        r.status_detail = Some(Cow::Borrowed(
            "killed as the call returned (revoked, or no task approval)",
        ));
    }
    (FILE_ACTIVITY, activity)
}

#[cfg(test)]
mod tests {
    use super::super::testing::of_kind;

    #[test]
    fn file_opens_read_or_update_per_access() {
        let f = of_kind("file_open");
        assert_eq!(f[0]["class_uid"], 1001);
        assert_eq!(f[0]["activity_id"], 2, "read");
        assert_eq!(f[0]["file"]["path"], "/srv/repo/.git/config");
        assert_eq!(f[0]["file"]["name"], "config");
        assert_eq!(f[0]["count"], 3, "the open and its two repeats");
        assert_eq!(f[1]["activity_id"], 3, "write");
        assert_eq!(f[1]["status_id"], 2);
        assert_eq!(f[1]["status_code"], "EACCES");
        let l = of_kind("file_link");
        assert_eq!(l[0]["activity_id"], 1, "a link is created");
        assert_eq!(l[0]["file"]["path"], "/srv/repo/hl");
        assert_eq!(l[1]["activity_id"], 5, "rename");
        assert_eq!(l[1]["file"]["path"], "/srv/secrets/token");
        assert_eq!(l[1]["file_result"]["path"], "/srv/repo/token");
    }
}
