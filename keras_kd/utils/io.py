"""Writing files without losing any: atomic writes and folders we own.

Every file keras_kd writes goes through this module:

- `atomic_path(path)` yields a temporary path in the same folder; the tool
  writing by path (Keras saving, the LiteRT converter, Matplotlib) writes
  there, and the file is moved onto `path` with `os.replace` only once it is
  complete. On any error the temporary file is removed and a previous file
  at `path` is left as it was.
- `atomic_write(path, mode)` does the same for an open file object.
- `atomic_keras_save(model, path)` is `keras.Model.save` through
  `atomic_path`.
- `check_replaceable_folder(...)` / `replace_folder(...)`: keras_kd replaces
  a folder only if it wrote it itself, which it recognises by its own
  metadata file in the folder (`is_keras_kd_folder`). A user's folder, the
  working directory or a file is never deleted: it is an error naming the
  path.
"""

import contextlib
import json
import os
import shutil
import tempfile
import uuid

# The key of the metadata file that marks a folder written by keras_kd.
FORMAT_KEY = "keras_kd_format"


def _fspath(name, path):
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(
            f"Argument `{name}` must be a string or `os.PathLike`. "
            f"Received: {name}={path!r} of type {type(path).__name__}"
        )
    return os.fspath(path)


def _is_remote(path):
    return "://" in path


def _nearest_existing(folder):
    while folder and not os.path.exists(folder):
        parent = os.path.dirname(folder)
        if parent == folder:
            break
        folder = parent
    return folder


def check_file_target(name, path):
    """Checks that a file can be written at `path`; returns it as a string.

    `path` must not be an existing folder, and its folder must exist or be
    creatable (the nearest existing ancestor is a writable folder).

    Raises:
        TypeError: If `path` is not a string or `os.PathLike`.
        ValueError: If `path` names a folder, or a file is in the way of
            its folder.
        PermissionError: If its folder is not writable.
    """
    path = _fspath(name, path)
    if _is_remote(path):
        return path
    if path == "" or os.path.isdir(path):
        raise ValueError(
            f"Argument `{name}` must name a file, but {path!r} is a folder. "
            f"Received: {name}={path!r}. Pass a file path such as "
            f"{os.path.join(path or '.', 'model.keras')!r}."
        )
    folder = os.path.dirname(os.path.abspath(path))
    existing = _nearest_existing(folder)
    if not os.path.isdir(existing):
        raise ValueError(
            f"Argument `{name}` cannot be written: {existing!r} is a file, "
            f"so the folder {folder!r} cannot exist. Received: "
            f"{name}={path!r}. Choose a path in a folder."
        )
    if not os.access(existing, os.W_OK | os.X_OK):
        raise PermissionError(
            f"Argument `{name}` cannot be written: the folder {existing!r} "
            f"is not writable. Received: {name}={path!r}. Choose a folder "
            "you can write to."
        )
    return path


def _suffix(path):
    name = os.path.basename(path)
    return os.path.splitext(name)[1]


def _new_temp_file(path, suffix):
    directory, name = os.path.split(os.path.abspath(path))
    while True:
        temp = os.path.join(
            directory, f".{name}.{uuid.uuid4().hex[:8]}.tmp{suffix}"
        )
        try:
            # Unlike `mkstemp` (always 0o600), `os.open` gives the file the
            # mode any new file gets under the umask.
            flags = os.O_CREAT | os.O_EXCL | os.O_WRONLY
            os.close(os.open(temp, flags, 0o666))
            return temp
        except FileExistsError:
            continue


def _user_error(name, path, error):
    """`error` (about a temporary file) retold with the user's path."""
    reason = error.strerror or str(error)
    cls = type(error) if isinstance(error, OSError) else OSError
    try:
        return cls(
            error.errno,
            f"Argument `{name}` could not be written ({reason}); any "
            f"previous file there is unchanged. Received: {name}={path!r}. "
            "Check that the folder exists, is writable and has free space",
        )
    except TypeError:  # pragma: no cover - exotic OSError subclasses
        return OSError(f"Argument `{name}` could not be written ({reason}). "
                       f"Received: {name}={path!r}")


@contextlib.contextmanager
def atomic_path(path, name="path", suffix=None, make_parents=False):
    """Yields a temporary path beside `path`, moved onto it on success.

    Args:
        path: String or `os.PathLike`, the file to write.
        name: String, the argument name used in error messages.
            Defaults to `"path"`.
        suffix: Optional string, the ending of the temporary name (tools
            such as `Model.save` check it). Defaults to the extension of
            `path`.
        make_parents: Boolean, create the missing folders of `path`.
            Defaults to `False`.

    Yields:
        The temporary path (an empty file already exists there).

    Raises:
        OSError: If the folder cannot be written; the message names `path`,
            never the temporary file.

    Example:

    ```python
    with keras_kd.utils.io.atomic_path("plot.png") as temp:
        figure.savefig(temp)
    ```
    """
    path = check_file_target(name, path)
    if _is_remote(path):  # No rename on remote file systems.
        yield path
        return
    folder = os.path.dirname(os.path.abspath(path))
    try:
        if make_parents:
            os.makedirs(folder, exist_ok=True)
        temp = _new_temp_file(path, _suffix(path) if suffix is None else
                              suffix)
    except OSError as error:
        raise _user_error(name, path, error) from error
    try:
        try:
            yield temp
        except OSError as error:
            if error.filename is not None and os.path.abspath(
                    str(error.filename)) == temp:
                raise _user_error(name, path, error) from error
            raise
        try:
            os.replace(temp, path)
        except OSError as error:
            raise _user_error(name, path, error) from error
    finally:
        if os.path.lexists(temp):
            os.remove(temp)


@contextlib.contextmanager
def atomic_write(path, mode="w", name="path", make_parents=False,
                 **open_kwargs):
    """Opens a temporary file beside `path`; moves it there when complete.

    Args:
        path: String or `os.PathLike`.
        mode: `"w"` or `"wb"`. Defaults to `"w"`.
        name: String, the argument name used in error messages.
        make_parents: Boolean, create the missing folders of `path`.
        **open_kwargs: Passed to `open` (`encoding`, `newline`).

    Yields:
        The open file object.
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"Argument `mode` must be 'w' or 'wb'. Received: "
                         f"mode={mode!r}")
    with atomic_path(path, name=name, make_parents=make_parents) as temp:
        with open(temp, mode, **open_kwargs) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())


def write_json(path, value, name="path", **dump_kwargs):
    """Writes `value` as JSON to `path`, atomically."""
    with atomic_write(path, "w", name=name, encoding="utf-8") as f:
        json.dump(value, f, **dump_kwargs)
    return os.fspath(path)


def atomic_keras_save(model, filepath, overwrite=True, **kwargs):
    """`keras.Model.save(model, filepath)`, written atomically.

    Keras writes the `.keras` zip in place, so a save that fails half way
    (a full disk, an unserializable layer) leaves a broken file over the
    previous one. Here Keras writes a temporary `.keras` file beside
    `filepath`, which replaces `filepath` only once complete.

    Args:
        model: A `keras.Model`. Its class's `save` is not called (so a
            `save` override may call this function); `keras.Model.save` is.
        filepath: String or `os.PathLike`, ending in `.keras` (or `.h5`).
        overwrite: Boolean. If `False` and `filepath` exists, asks before
            replacing it, as Keras does. Defaults to `True`.
        **kwargs: Other `keras.Model.save` arguments.

    Returns:
        `None`, as `keras.Model.save`.

    Example:

    ```python
    keras_kd.utils.io.atomic_keras_save(student, "student.keras")
    ```
    """
    import keras

    path = _fspath("filepath", filepath)
    if kwargs.get("zipped") is False or _is_remote(path):
        # An unzipped save writes a folder; remote paths cannot be renamed.
        return keras.Model.save(model, path, overwrite=overwrite, **kwargs)
    if not overwrite and os.path.exists(path):
        answer = input(f"[WARNING] {path} already exists - overwrite? "
                       "[y/n]").strip().lower()
        if answer not in ("y", "yes"):
            return None
    with atomic_path(path, name="filepath") as temp:
        keras.Model.save(model, temp, overwrite=True, **kwargs)
    return None


def check_keras_file(name, path):
    """Checks that `path` is a complete `.keras` zip archive.

    Keras reports a truncated or damaged `.keras` file as "File not found";
    this names the problem instead. Other formats (`.h5`, a folder) pass.

    Raises:
        ValueError: If the file is not a readable `.keras` zip archive.
    """
    import zipfile

    path = _fspath(name, path)
    if not path.endswith(".keras") or not os.path.isfile(path):
        return path
    size = os.path.getsize(path)
    problem = None
    if not zipfile.is_zipfile(path):
        problem = (f"it is not a valid `.keras` zip archive ({size} bytes; "
                   "a truncated or interrupted copy, or not a Keras file)")
    else:
        try:
            with zipfile.ZipFile(path) as archive:
                names = archive.namelist()
                bad = archive.testzip()
        except (zipfile.BadZipFile, OSError, EOFError) as error:
            bad, names = f"({error})", []
        if bad is not None:
            problem = (f"the zip archive is damaged (member {bad} fails its "
                       "checksum)")
        elif "config.json" not in names:
            problem = ("the zip archive holds no `config.json`, so it is not "
                       "a Keras model")
    if problem:
        raise ValueError(
            f"Argument `{name}` names a damaged file: {problem}. Received: "
            f"{name}={path!r}. Save the model again with "
            "`model.save(path)`, or copy the file again."
        )
    return path


# ----------------------------------------------------------------------
# Folders written by keras_kd.


def read_folder_format(path, marker):
    """The format recorded in `path/marker`, or `None` if it is not ours."""
    meta = os.path.join(path, marker)
    if not os.path.isfile(meta):
        return None
    try:
        with open(meta, encoding="utf-8") as f:
            value = json.load(f)
    except (OSError, ValueError):
        return None
    if not isinstance(value, dict):
        return None
    return value.get(FORMAT_KEY)


def is_keras_kd_folder(path, marker, format_name=None):
    """Whether `path` is a folder written by keras_kd.

    Args:
        path: The folder.
        marker: File name of the metadata keras_kd writes in such folders.
        format_name: Optional string; if given, the metadata must record
            this format.

    Returns:
        Boolean.
    """
    if not os.path.isdir(path) or os.path.islink(path):
        return False
    found = read_folder_format(path, marker)
    if found is None:
        return False
    return format_name is None or found == format_name


def _contains(folder, path):
    folder, path = os.path.realpath(folder), os.path.realpath(path)
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def check_replaceable_folder(name, path, marker, what="folder"):
    """Checks that keras_kd may write the folder `path`; returns it.

    keras_kd may create `path`, use an existing empty folder, or replace a
    folder that holds its own metadata file `marker`. Anything else is
    refused before any work starts: a file, a symbolic link, the working
    directory (or a folder holding it), or a folder of other files.

    Raises:
        TypeError: If `path` is not a string or `os.PathLike`.
        ValueError: If keras_kd may not replace `path`.
    """
    path = _fspath(name, path)
    fix = (f"Pass the path of a new folder (for example "
           f"{os.path.join(path, 'teacher_cache')!r}) or remove it yourself.")
    if os.path.islink(path):
        raise ValueError(
            f"Argument `{name}` names a symbolic link, which keras_kd does "
            f"not replace with its {what}. Received: {name}={path!r}. {fix}"
        )
    if not os.path.exists(path):
        check_file_target(name, path)
        return path
    if not os.path.isdir(path):
        raise ValueError(
            f"Argument `{name}` names an existing file; keras_kd writes its "
            f"{what} as a folder and never replaces a file it did not write. "
            f"Received: {name}={path!r}. {fix}"
        )
    if _contains(path, os.getcwd()):
        raise ValueError(
            f"Argument `{name}` names the working directory (or a folder "
            f"holding it), which keras_kd never replaces with its {what}. "
            f"Received: {name}={path!r}. {fix}"
        )
    if os.listdir(path) and not is_keras_kd_folder(path, marker):
        raise ValueError(
            f"Argument `{name}` names an existing folder that keras_kd did "
            f"not write (it holds other files and no {marker!r}); keras_kd "
            f"only replaces a {what} it wrote itself. Received: "
            f"{name}={path!r}. {fix}"
        )
    check_file_target(name, os.path.join(path, marker))
    return path


def new_temp_folder(path):
    """An empty hidden folder beside `path`, to fill and then move there."""
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    name = os.path.basename(os.path.abspath(path))
    return tempfile.mkdtemp(prefix=f".{name}.", suffix=".tmp", dir=parent)


def replace_folder(temp, path, marker, name="path", what="folder"):
    """Moves the complete folder `temp` onto `path`.

    `path` is checked again (`check_replaceable_folder`): only a missing
    path, an empty folder or a folder keras_kd wrote is replaced. The old
    folder is moved aside first and deleted only once `temp` is in place.
    """
    check_replaceable_folder(name, path, marker, what)
    aside = None
    if os.path.exists(path):
        aside = new_temp_folder(path)
        os.rmdir(aside)
        os.rename(path, aside)
    try:
        os.replace(temp, path)
    except BaseException:
        if aside is not None:
            os.rename(aside, path)
        raise
    if aside is not None:
        shutil.rmtree(aside, ignore_errors=True)
    return path
