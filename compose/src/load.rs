//! The loader: files -> spanned trees -> (interpolate, canonicalise, include,
//! extends, merge) -> paths -> environment -> normalise -> typed [`Project`] ->
//! profiles -> consistency checks. The order is compose-go's.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use crate::files::{find_compose_files, is_valid_project_name, normalize_project_name};
use crate::merge::{enforce_unicity, merge, strip_tags};
use crate::model::{Project, Service};
use crate::node_de::{did_you_mean, from_node, DeError};
use crate::transform::canonical;
use crate::{dotenv, parse_toml, substitute, LoadError, Node, ParseError, Span, Value};

/// What to load and how; [`Default`] turns every stage on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadOptions {
    /// Compose files in override order (`-f`). Empty: `COMPOSE_FILE` from
    /// `environment` (split on `COMPOSE_PATH_SEPARATOR`, default `:`), else
    /// [`find_compose_files`] from `project_directory` or the current directory.
    pub files: Vec<PathBuf>,
    /// `-p`; else `COMPOSE_PROJECT_NAME`, else the top-level `name`, else the
    /// project directory's name (normalised).
    pub project_name: Option<String>,
    /// `--project-directory`; else the directory of the first file.
    pub project_directory: Option<PathBuf>,
    /// `--env-file` (repeatable, later files win); empty: `.env` in the project
    /// directory when it exists.
    pub env_files: Vec<PathBuf>,
    /// `--profile`; empty: `COMPOSE_PROFILES` (comma-separated) from the environment.
    pub profiles: Vec<String>,
    /// The shell environment (pass `std::env::vars().collect()`); it wins over `.env`.
    pub environment: BTreeMap<String, String>,
    /// Substitute `${VAR}` (off: `--no-interpolate`).
    pub interpolate: bool,
    /// Validate every file against the compose-spec JSON Schema, after
    /// interpolation (off: compose-go's `SkipValidation`; `compose config` keeps it on).
    pub validate: bool,
    /// Implicit defaults: `default` network, resource names, dependencies implied
    /// by `links`/`volumes_from`/`service:` (off: `--no-normalize`).
    pub normalize: bool,
    /// Cross-reference checks (off: `--no-consistency`).
    pub consistency: bool,
    /// Make relative paths absolute against the project directory (off:
    /// `--no-path-resolution`).
    pub resolve_paths: bool,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            files: Vec::new(),
            project_name: None,
            project_directory: None,
            env_files: Vec::new(),
            profiles: Vec::new(),
            environment: BTreeMap::new(),
            interpolate: true,
            validate: true,
            normalize: true,
            consistency: true,
            resolve_paths: true,
        }
    }
}

/// Loads a compose project.
pub fn load(opts: &LoadOptions) -> Result<Project, LoadError> {
    let mut loader = Loader::new(opts);
    loader.run().map_err(|e| loader.redact(e))
}

/// Values shorter than this are not scrubbed by [`Loader::redact`] (they would
/// garble messages, `1` in `ports.1`, and are no secrets); every error site
/// already shows [`crate::REDACTED`] for a node marked [`Span::interpolated`].
const MIN_REDACTED_LEN: usize = 4;

pub(crate) type Env = BTreeMap<String, String>;

pub(crate) struct Loader<'o> {
    opts: &'o LoadOptions,
    /// Display names of the files, indexed by `Span::file`.
    table: Vec<String>,
    home: Option<String>,
    /// The main project directory (absolute); relative paths in trees are relative to it.
    root: PathBuf,
    /// Every non-empty value interpolation substituted, with its variable's name:
    /// the safety net of [`Loader::redact`].
    substituted: std::cell::RefCell<BTreeMap<String, String>>,
}

fn io_err(file: &Path, e: impl std::fmt::Display) -> LoadError {
    LoadError::Io {
        file: file.display().to_string(),
        message: e.to_string(),
    }
}

/// Lexical absolute path (no symlink resolution), like Go's `filepath.Abs`.
fn absolute(p: &Path) -> PathBuf {
    if p.is_absolute() {
        clean(p)
    } else {
        let cwd = std::env::current_dir().unwrap_or_default();
        clean(&cwd.join(p))
    }
}

/// Lexical `filepath.Clean`.
pub(crate) fn clean(p: &Path) -> PathBuf {
    let mut out: Vec<Component<'_>> = Vec::new();
    for c in p.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => match out.last() {
                Some(Component::Normal(_)) => {
                    out.pop();
                }
                Some(Component::RootDir) => {}
                _ => out.push(c),
            },
            c => out.push(c),
        }
    }
    if out.is_empty() {
        return PathBuf::from(".");
    }
    out.iter().collect()
}

impl<'o> Loader<'o> {
    fn new(opts: &'o LoadOptions) -> Self {
        let home = opts
            .environment
            .get("HOME")
            .cloned()
            .or_else(|| std::env::var("HOME").ok());
        Loader {
            opts,
            table: Vec::new(),
            home,
            root: PathBuf::new(),
            substituted: std::cell::RefCell::new(BTreeMap::new()),
        }
    }

    /// Interpolation's lookup of `name` in `env`: a non-empty value sets `used`
    /// (the node gets [`Span::interpolated`]) and is remembered for [`Loader::redact`].
    fn lookup(&self, env: &Env, name: &str, used: &std::cell::Cell<bool>) -> Option<String> {
        let v = env.get(name).cloned();
        if let Some(v) = v.as_ref().filter(|v| !v.is_empty()) {
            used.set(true);
            if v.chars().count() >= MIN_REDACTED_LEN {
                self.substituted
                    .borrow_mut()
                    .insert(v.clone(), name.to_string());
            }
        }
        v
    }

    /// The safety net under the error sites: any value interpolation substituted
    /// that still appears in `e` (a message built from the typed model, a path
    /// joined from it) is replaced by `${NAME}`, longest values first.
    fn redact(&self, e: LoadError) -> LoadError {
        let subs = self.substituted.borrow();
        if subs.is_empty() {
            return e;
        }
        let mut pairs: Vec<(&String, &String)> = subs.iter().collect();
        pairs.sort_by_key(|(v, _)| std::cmp::Reverse(v.len()));
        let scrub = |s: &mut String| {
            for (value, name) in &pairs {
                if s.contains(value.as_str()) {
                    *s = s.replace(value.as_str(), &format!("${{{name}}}"));
                }
            }
        };
        let mut e = e;
        match &mut e {
            LoadError::Io { file, message } | LoadError::Dotenv { file, message, .. } => {
                scrub(file);
                scrub(message);
            }
            LoadError::NotFound(_) => {}
            // `${VAR:?message ${OTHER}}`: the file's author asked for OTHER's value in
            // the message (compose-go prints it); nothing else there is a value.
            LoadError::Interpolation(p) => {
                scrub(&mut p.file);
                scrub(&mut p.path);
            }
            LoadError::Syntax(p)
            | LoadError::Invalid(p)
            | LoadError::Extends(p)
            | LoadError::Consistency(p) => {
                scrub(&mut p.file);
                scrub(&mut p.path);
                scrub(&mut p.message);
            }
            LoadError::DependencyCycle { services, at } => {
                services.iter_mut().for_each(&scrub);
                scrub(&mut at.file);
                scrub(&mut at.path);
                scrub(&mut at.message);
            }
        }
        e
    }

    /// `p` (relative to the project directory, or absolute) as an absolute path.
    pub(crate) fn abs(&self, p: &Path) -> PathBuf {
        clean(&self.root.join(p))
    }

    /// `dir` relative to the project directory when inside it, else absolute.
    fn rel(&self, dir: &Path) -> PathBuf {
        match relative_to(dir, &self.root) {
            Some(r) if !r.starts_with("..") => r,
            _ => dir.to_path_buf(),
        }
    }

    fn file_name(&self, span: Span) -> String {
        self.table
            .get(span.file as usize)
            .cloned()
            .unwrap_or_default()
    }

    fn located(&self, span: Span, path: &str, message: impl Into<String>) -> ParseError {
        ParseError {
            file: self.file_name(span),
            line: span.line,
            column: span.column,
            path: path.to_string(),
            message: message.into(),
        }
    }

    fn de_err(&self, e: DeError) -> LoadError {
        let span = e.span.unwrap_or_default();
        LoadError::Invalid(self.located(span, &e.path.unwrap_or_default(), e.message))
    }

    /// Reads and parses one file: one tree per YAML document (TOML: one).
    fn read_trees(&mut self, path: &Path) -> Result<Vec<Node>, LoadError> {
        let text = std::fs::read_to_string(path).map_err(|e| io_err(path, e))?;
        let name = path.display().to_string();
        let is_toml = path.extension().is_some_and(|e| e == "toml");
        let trees = if is_toml {
            parse_toml(&name, &text).map(|t| vec![t])
        } else {
            crate::yaml::parse_yaml_documents(&name, &text)
        }
        .map_err(LoadError::Syntax)?;
        let idx = u32::try_from(self.table.len()).unwrap_or(u32::MAX);
        self.table.push(name);
        let mut out = Vec::with_capacity(trees.len());
        for mut tree in trees {
            tree.set_file(idx);
            match tree.value {
                Value::Map(_) => {}
                Value::Null => tree.value = Value::Map(Vec::new()),
                _ => {
                    return Err(LoadError::Invalid(self.located(
                        tree.span,
                        "",
                        "top-level object must be a mapping",
                    )))
                }
            }
            out.push(tree);
        }
        Ok(out)
    }

    /// Every document of every file, each paired with its file.
    fn read_all(&mut self, files: &[PathBuf]) -> Result<(Vec<Node>, Vec<PathBuf>), LoadError> {
        let mut trees = Vec::with_capacity(files.len());
        let mut names = Vec::with_capacity(files.len());
        for f in files {
            for t in self.read_trees(f)? {
                trees.push(t);
                names.push(f.clone());
            }
        }
        Ok((trees, names))
    }

    /// The compose files, and (without `-f`) the environment docker compose reads
    /// before it looks for them: the shell over `--env-file`s or `.env` in the
    /// project directory (else the working directory), so `COMPOSE_FILE` and
    /// `COMPOSE_PATH_SEPARATOR` may come from `.env`.
    fn compose_files(&self) -> Result<(Vec<PathBuf>, Option<Env>), LoadError> {
        if !self.opts.files.is_empty() {
            return Ok((self.opts.files.iter().map(|f| absolute(f)).collect(), None));
        }
        let dir = absolute(
            self.opts
                .project_directory
                .as_deref()
                .unwrap_or(Path::new(".")),
        );
        let env = self.environment(&dir)?;
        if let Some(cf) = env.get("COMPOSE_FILE").filter(|s| !s.is_empty()) {
            let sep = env
                .get("COMPOSE_PATH_SEPARATOR")
                .filter(|s| !s.is_empty())
                .cloned()
                .unwrap_or_else(|| ":".into());
            let base = self
                .opts
                .project_directory
                .clone()
                .unwrap_or_else(|| PathBuf::from("."));
            let files = cf
                .split(sep.as_str())
                .filter(|s| !s.is_empty())
                .map(|f| absolute(&base.join(f)))
                .collect();
            return Ok((files, Some(env)));
        }
        Ok((find_compose_files(&dir)?, Some(env)))
    }

    fn environment(&self, project_dir: &Path) -> Result<Env, LoadError> {
        let shell = &self.opts.environment;
        let files: Vec<PathBuf> = if self.opts.env_files.is_empty() {
            let f = project_dir.join(".env");
            if f.is_dir() {
                return Err(io_err(&f, ".env is a directory"));
            }
            if f.exists() {
                vec![f]
            } else {
                Vec::new()
            }
        } else {
            self.opts.env_files.iter().map(|f| absolute(f)).collect()
        };
        let mut env = read_env_files(&files, shell)?;
        for (k, v) in shell {
            env.insert(k.clone(), v.clone());
        }
        Ok(env)
    }

    fn run(&mut self) -> Result<Project, LoadError> {
        let (files, early_env) = self.compose_files()?;
        let first = files
            .first()
            .cloned()
            .ok_or_else(|| LoadError::NotFound(PathBuf::from(".")))?;
        let project_dir = match &self.opts.project_directory {
            Some(d) => absolute(d),
            None => first
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_else(|| PathBuf::from("/")),
        };
        self.root = project_dir.clone();
        let mut env = self.environment(&project_dir)?;
        // docker compose reads `.env` again from the project directory once the
        // files are known; what it read first (shell, first `.env`) wins.
        for (k, v) in early_env.unwrap_or_default() {
            env.insert(k, v);
        }
        let (trees, doc_files) = self.read_all(&files)?;
        let name = self.project_name(&trees, &env, &project_dir)?;
        env.entry("COMPOSE_PROJECT_NAME".into())
            .or_insert_with(|| name.clone());

        let base = project_dir.clone();
        let mut dict = self.load_model(trees, &doc_files, &base, &env, &[])?;
        if matches!(&dict.value, Value::Map(e) if e.is_empty()) {
            return Err(LoadError::Invalid(ParseError {
                file: first.display().to_string(),
                line: 0,
                column: 0,
                path: String::new(),
                message: "empty compose file".into(),
            }));
        }
        self.post_model(&mut dict, &base, &env, self.opts.resolve_paths)?;
        if self.opts.normalize {
            crate::normalize::normalize_tree(&mut dict, &name);
        }
        dict.remove("include");
        dict.remove("version");
        dict.insert("name", Node::string(name.clone(), Span::default()));
        let mut project: Project = from_node(&dict, "").map_err(|e| self.de_err(e))?;
        project.name = name;
        self.extensions(&dict, &mut project)?;
        let disabled = crate::normalize::apply_profiles(&mut project, &self.profiles(&env));
        if self.opts.consistency {
            crate::normalize::check(&project, &disabled, &dict, &|span, path, msg| {
                self.located(span, path, msg)
            })?;
        }
        Ok(project)
    }

    fn profiles(&self, env: &Env) -> Vec<String> {
        if !self.opts.profiles.is_empty() {
            return self.opts.profiles.clone();
        }
        env.get("COMPOSE_PROFILES")
            .map(|p| {
                p.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(String::from)
                    .collect()
            })
            .unwrap_or_default()
    }

    fn project_name(
        &self,
        trees: &[Node],
        env: &Env,
        project_dir: &Path,
    ) -> Result<String, LoadError> {
        // `secret`: the name is a variable's value (COMPOSE_PROJECT_NAME), not quoted.
        let explicit = |n: &str, what: &str, secret: bool| {
            if is_valid_project_name(n) {
                return Ok(n.to_string());
            }
            let shown = if secret {
                crate::REDACTED.to_string()
            } else {
                format!("{n:?}")
            };
            let message = format!(
                "invalid project name {shown} ({what}): must contain only lowercase letters, digits, dashes and underscores, and start with a letter or digit"
            );
            Err(LoadError::Invalid(ParseError {
                file: String::new(),
                line: 0,
                column: 0,
                path: "name".into(),
                message,
            }))
        };
        if let Some(n) = &self.opts.project_name {
            return explicit(n, "-p", false);
        }
        if let Some(n) = env.get("COMPOSE_PROJECT_NAME").filter(|s| !s.is_empty()) {
            return explicit(n, "COMPOSE_PROJECT_NAME", true);
        }
        for t in trees.iter().rev() {
            if let Some(n) = t.get("name") {
                let raw = n.scalar_text().unwrap_or_default();
                let used = std::cell::Cell::new(false);
                let raw = if self.opts.interpolate {
                    let lookup = |k: &str| self.lookup(env, k, &used);
                    substitute(&raw, &lookup).map_err(|e| {
                        LoadError::Interpolation(self.located(
                            n.span,
                            "name",
                            format!("error while interpolating name: {e}"),
                        ))
                    })?
                } else {
                    raw
                };
                // compose-go never refuses the file's name: it normalises it
                // (`My App` is `myapp`), or with normalisation off takes it as written
                // (what `config --no-normalize` prints).
                let v = if self.opts.normalize {
                    normalize_project_name(&raw)
                } else {
                    raw
                };
                if !v.is_empty() {
                    return Ok(v);
                }
            }
        }
        let dir = project_dir
            .file_name()
            .map(|s| s.to_string_lossy().to_string())
            .unwrap_or_default();
        Ok(normalize_project_name(&dir))
    }

    /// Interpolates, canonicalises, includes, extends and merges `trees` (the
    /// files `files`), returning one canonical tree. Relative paths in included
    /// and extended files are rebased onto `base`.
    fn load_model(
        &mut self,
        trees: Vec<Node>,
        files: &[PathBuf],
        base: &Path,
        env: &Env,
        included: &[PathBuf],
    ) -> Result<Node, LoadError> {
        let mut dict = Node::new(Value::Map(Vec::new()), Span::default());
        for (mut tree, file) in trees.into_iter().zip(files) {
            self.prepare(&mut tree, env, self.opts.validate)?;
            let mut chain = included.to_vec();
            chain.push(file.clone());
            self.apply_include(&mut tree, base, env, &chain)?;
            crate::extends::apply_extends(self, &mut tree, file, base, env)?;
            merge(&mut dict, tree, "");
            enforce_unicity(&mut dict, &mut Vec::new());
        }
        Ok(strip_tags(dict))
    }

    /// Interpolation, schema validation (when `validate`) and canonical form for
    /// one freshly parsed file.
    pub(crate) fn prepare(
        &self,
        tree: &mut Node,
        env: &Env,
        validate: bool,
    ) -> Result<(), LoadError> {
        if self.opts.interpolate {
            self.interpolate(tree, &mut String::new(), env)?;
        }
        if validate {
            self.check_extends_service(tree)?;
            crate::schema::validate_schema(tree)
                .map_err(|e| LoadError::Invalid(self.located(e.span, &e.path, e.message)))?;
        }
        canonical(tree).map_err(|e| {
            let file = self.file_name(e.span);
            LoadError::Invalid(e.into_parse_error(&file))
        })
    }

    /// compose-go applies `extends` before it validates, so an `extends` mapping
    /// without `service` is refused in `extends`' words, not the schema's.
    fn check_extends_service(&self, tree: &Node) -> Result<(), LoadError> {
        let Some(Value::Map(services)) = tree.get("services").map(|s| &s.value) else {
            return Ok(());
        };
        for (name, _, svc) in services {
            if let Some(ext) = svc.get("extends") {
                if matches!(ext.value, Value::Map(_)) && ext.get("service").is_none() {
                    return Err(self.error_at(
                        ext.span,
                        &format!("services.{name}.extends"),
                        format!("extends.{name}.service is required"),
                    ));
                }
            }
        }
        Ok(())
    }

    pub(crate) fn read_prepared(&mut self, path: &Path, env: &Env) -> Result<Node, LoadError> {
        let mut acc = Node::new(Value::Map(Vec::new()), Span::default());
        for mut t in self.read_trees(path)? {
            // Like compose-go, a file read for `extends` is not validated on its
            // own (only the service taken from it matters; typing checks it).
            self.prepare(&mut t, env, false)?;
            merge(&mut acc, t, "");
        }
        Ok(strip_tags(acc))
    }

    fn interpolate(&self, n: &mut Node, path: &mut String, env: &Env) -> Result<(), LoadError> {
        match &mut n.value {
            Value::String(s) if s.contains('$') => {
                let used = std::cell::Cell::new(false);
                let lookup = |k: &str| self.lookup(env, k, &used);
                match substitute(s, &lookup) {
                    Ok(v) => {
                        *s = v;
                        n.span.interpolated |= used.get();
                    }
                    Err(e) => {
                        return Err(LoadError::Interpolation(self.located(
                            n.span,
                            path,
                            e.to_string(),
                        )))
                    }
                }
            }
            Value::Seq(items) => {
                for (i, it) in items.iter_mut().enumerate() {
                    let len = path.len();
                    push_path(path, &i.to_string());
                    self.interpolate(it, path, env)?;
                    path.truncate(len);
                }
            }
            Value::Map(entries) => {
                for (k, _, v) in entries.iter_mut() {
                    let len = path.len();
                    push_path(path, k);
                    self.interpolate(v, path, env)?;
                    path.truncate(len);
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn apply_include(
        &mut self,
        tree: &mut Node,
        base: &Path,
        env: &Env,
        chain: &[PathBuf],
    ) -> Result<(), LoadError> {
        let Some(inc) = tree.remove("include") else {
            return Ok(());
        };
        let Value::Seq(entries) = inc.value else {
            return Err(LoadError::Invalid(self.located(
                inc.span,
                "include",
                "must be a list",
            )));
        };
        let file_dir = self.abs(base);
        for (i, e) in entries.into_iter().enumerate() {
            let p = format!("include.{i}");
            let spec: crate::model::Include = from_node(&e, &p).map_err(|e| self.de_err(e))?;
            let paths: Vec<PathBuf> = spec
                .path
                .iter()
                .map(|s| absolute(&file_dir.join(s)))
                .collect();
            let Some(main) = paths.first() else {
                return Err(LoadError::Invalid(self.located(
                    e.span,
                    &format!("{p}.path"),
                    "include needs at least one path",
                )));
            };
            if chain.contains(main) {
                let mut names: Vec<String> =
                    chain.iter().map(|c| c.display().to_string()).collect();
                names.push(main.display().to_string());
                return Err(LoadError::Extends(self.located(
                    e.span,
                    &p,
                    format!("include cycle detected: {}", names.join(" -> ")),
                )));
            }
            let proj_dir = match &spec.project_directory {
                Some(d) => absolute(&file_dir.join(d)),
                None => main.parent().map(Path::to_path_buf).unwrap_or_default(),
            };
            // Relative paths of the included model are rebased onto its project
            // directory, expressed relative to our base when that is relative.
            let rel_base = self.rel(&proj_dir);
            let env_files: Vec<PathBuf> = if spec.env_file.is_empty() {
                let f = proj_dir.join(".env");
                if f.is_file() {
                    vec![f]
                } else {
                    Vec::new()
                }
            } else {
                spec.env_file
                    .iter()
                    .filter(|f| *f != "/dev/null")
                    .map(|f| absolute(&file_dir.join(f)))
                    .collect()
            };
            let mut sub_env = read_env_files(&env_files, env)?;
            for (k, v) in env {
                sub_env.insert(k.clone(), v.clone());
            }
            let (trees, doc_files) = self.read_all(&paths)?;
            let mut imported = self.load_model(trees, &doc_files, &rel_base, &sub_env, chain)?;
            self.post_model(&mut imported, &proj_dir, &sub_env, true)?;
            if !self.opts.resolve_paths {
                crate::paths::relativize(&mut imported, &self.root);
            }
            import_resources(tree, imported);
        }
        Ok(())
    }

    /// Paths, `env_file`/`label_file` contents and environment resolution.
    fn post_model(
        &self,
        dict: &mut Node,
        base: &Path,
        env: &Env,
        resolve: bool,
    ) -> Result<(), LoadError> {
        if resolve {
            crate::paths::resolve_paths(dict, base, self.home.as_deref());
        }
        let Some(Value::Map(services)) = dict.get_mut("services").map(|s| &mut s.value) else {
            return Ok(());
        };
        for (name, _, svc) in services.iter_mut() {
            // resolved paths are relative to the project directory, others to `base`
            let from = if resolve { Path::new("") } else { base };
            self.resolve_env_files(svc, name, from, env)?;
        }
        Ok(())
    }

    fn resolve_env_files(
        &self,
        svc: &mut Node,
        name: &str,
        base: &Path,
        env: &Env,
    ) -> Result<(), LoadError> {
        // env_file: values from the files, then `environment` on top; bare names
        // resolved from the project environment.
        let mut from_files: Vec<(String, Option<String>)> = Vec::new();
        if let Some(Value::Seq(items)) = svc.get("env_file").map(|n| &n.value) {
            for (i, it) in items.iter().enumerate() {
                let Some(p) = it.get("path").and_then(Node::scalar_text) else {
                    continue;
                };
                let required = !matches!(
                    it.get("required").map(|r| &r.value),
                    Some(Value::Bool(false))
                );
                let path = self.abs(&base.join(&p));
                if !path.exists() {
                    if required {
                        return Err(LoadError::Invalid(self.located(
                            it.span,
                            &format!("services.{name}.env_file.{i}"),
                            format!(
                                "env file {} not found",
                                crate::node::shown(
                                    &path.display().to_string(),
                                    it.get("path").map(|n| n.span).unwrap_or_default(),
                                    false
                                )
                            ),
                        )));
                    }
                    continue;
                }
                let vars = read_env_files(std::slice::from_ref(&path), env)?;
                for (k, v) in vars {
                    from_files.retain(|(ek, _)| *ek != k);
                    from_files.push((k, Some(v)));
                }
            }
        }
        let span = svc.span;
        if !from_files.is_empty() || svc.get("environment").is_some() {
            let mut merged: Vec<(String, Span, Node)> = from_files
                .into_iter()
                .map(|(k, v)| {
                    let n = match v {
                        Some(v) => Node::string(v, span),
                        None => Node::new(Value::Null, span),
                    };
                    (k, span, n)
                })
                .collect();
            if let Some(Value::Map(own)) = svc.get("environment").map(|n| n.value.clone()) {
                for (k, ks, v) in own {
                    let v = if matches!(v.value, Value::Null) {
                        match env.get(&k) {
                            Some(val) => Node::string(val.clone(), v.span),
                            None => match merged.iter().find(|(ek, _, _)| *ek == k) {
                                Some((_, _, existing)) => existing.clone(),
                                None => v,
                            },
                        }
                    } else {
                        v
                    };
                    merged.retain(|(ek, _, _)| *ek != k);
                    merged.push((k, ks, v));
                }
            }
            svc.insert("environment", Node::new(Value::Map(merged), span));
        }
        // label_file: labels from the files under the service's own labels.
        let mut labels: Vec<(String, Span, Node)> = Vec::new();
        if let Some(Value::Seq(items)) = svc.get("label_file").map(|n| &n.value) {
            for (i, it) in items.iter().enumerate() {
                let Some(p) = it.scalar_text() else { continue };
                let path = self.abs(&base.join(&p));
                let vars = read_env_files(std::slice::from_ref(&path), &Env::new()).map_err(
                    |e| match e {
                        LoadError::Io { message, .. } => LoadError::Invalid(self.located(
                            it.span,
                            &format!("services.{name}.label_file.{i}"),
                            message,
                        )),
                        e => e,
                    },
                )?;
                for (k, v) in vars {
                    labels.retain(|(ek, _, _)| *ek != k);
                    labels.push((k, it.span, Node::string(v, it.span)));
                }
            }
        }
        if !labels.is_empty() {
            if let Some(Value::Map(own)) = svc.get("labels").map(|n| n.value.clone()) {
                for (k, ks, v) in own {
                    labels.retain(|(ek, _, _)| *ek != k);
                    labels.push((k, ks, v));
                }
            }
            svc.insert("labels", Node::new(Value::Map(labels), span));
        }
        if let Some(b) = svc.get_mut("build") {
            if let Some(Value::Map(args)) = b.get_mut("args").map(|a| &mut a.value) {
                for (k, _, v) in args.iter_mut() {
                    if matches!(v.value, Value::Null) {
                        if let Some(val) = env.get(k) {
                            v.value = Value::String(val.clone());
                        }
                    }
                }
            }
        }
        Ok(())
    }

    fn extensions(&self, dict: &Node, project: &mut Project) -> Result<(), LoadError> {
        let ext = |n: &Node, path: &str| -> Result<crate::model::Extensions, LoadError> {
            let mut out = crate::model::Extensions::new();
            if let Value::Map(entries) = &n.value {
                for (k, _, v) in entries {
                    if k.starts_with("x-") {
                        let p = if path.is_empty() {
                            k.clone()
                        } else {
                            format!("{path}.{k}")
                        };
                        out.insert(k.clone(), from_node(v, &p).map_err(|e| self.de_err(e))?);
                    }
                }
            }
            Ok(out)
        };
        project.extensions = ext(dict, "")?;
        macro_rules! each {
            ($key:literal, $map:expr) => {
                if let Some(Value::Map(entries)) = dict.get($key).map(|n| &n.value) {
                    for (name, _, n) in entries {
                        if let Some(item) = $map.get_mut(name) {
                            item.extensions = ext(n, &format!("{}.{name}", $key))?;
                        }
                    }
                }
            };
        }
        each!("services", project.services);
        each!("networks", project.networks);
        each!("volumes", project.volumes);
        each!("secrets", project.secrets);
        each!("configs", project.configs);
        Ok(())
    }

    /// The file table entry for an error in `extends`.
    pub(crate) fn error_at(&self, span: Span, path: &str, message: String) -> LoadError {
        LoadError::Extends(self.located(span, path, message))
    }
}

fn push_path(path: &mut String, seg: &str) {
    if !path.is_empty() {
        path.push('.');
    }
    path.push_str(seg);
}

/// `path` relative to `from` (both absolute, clean).
pub(crate) fn relative_to(path: &Path, from: &Path) -> Option<PathBuf> {
    let p: Vec<Component<'_>> = path.components().collect();
    let f: Vec<Component<'_>> = from.components().collect();
    let common = p.iter().zip(&f).take_while(|(a, b)| a == b).count();
    if common == 0 {
        return None;
    }
    let mut out = PathBuf::new();
    for _ in common..f.len() {
        out.push("..");
    }
    for c in p.get(common..).unwrap_or_default() {
        out.push(c.as_os_str());
    }
    if out.as_os_str().is_empty() {
        out.push(".");
    }
    Some(out)
}

/// Reads dotenv files in order; `lookup` (the shell) is consulted first for `${VAR}`.
pub(crate) fn read_env_files(files: &[PathBuf], lookup: &Env) -> Result<Env, LoadError> {
    let mut out = Env::new();
    for f in files {
        if f.is_dir() {
            return Err(io_err(
                f,
                format!(
                    "{} is a directory",
                    f.file_name().unwrap_or_default().to_string_lossy()
                ),
            ));
        }
        let text = std::fs::read_to_string(f).map_err(|e| io_err(f, e))?;
        dotenv::parse_into(&text, &mut out, &|k| lookup.get(k).cloned()).map_err(|e| {
            LoadError::Dotenv {
                file: f.display().to_string(),
                line: e.line,
                message: e.message,
            }
        })?;
    }
    Ok(out)
}

fn import_resources(target: &mut Node, mut imported: Node) {
    for key in [
        "services", "volumes", "networks", "secrets", "configs", "models",
    ] {
        let Some(from) = imported.remove(key) else {
            continue;
        };
        let Value::Map(items) = from.value else {
            continue;
        };
        if target.get(key).is_none() {
            target.insert(key, Node::new(Value::Map(Vec::new()), from.span));
        }
        let Some(to) = target.get_mut(key) else {
            continue;
        };
        for (name, ks, item) in items {
            match to.get_mut(&name) {
                None => {
                    if let Value::Map(e) = &mut to.value {
                        e.push((name, ks, item));
                    }
                }
                Some(existing) => {
                    let mine = std::mem::replace(existing, item);
                    merge(existing, mine, &format!("{key}.{name}"));
                }
            }
        }
    }
}

/// Suggests a service name for an undefined reference.
pub(crate) fn suggest(name: &str, known: &BTreeMap<String, Service>) -> String {
    match did_you_mean(name, known.keys().map(String::as_str)) {
        Some(s) => format!(" (did you mean {s:?}?)"),
        None => String::new(),
    }
}

pub(crate) use Loader as LoaderCtx;
