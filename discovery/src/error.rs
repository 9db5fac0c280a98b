//! Configuration errors: each names its origin (file), line, column and field, and
//! [`ConfigErrors`] carries every error found in one pass, not only the first.

use std::fmt;

/// One problem in a configuration.
///
/// `line` and `column` are 1-based; 0 means the error has no position (the file could not
/// be read). `field` is a path such as `routes[2].service`, empty when no field applies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub origin: String,
    pub line: usize,
    pub column: usize,
    pub field: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    /// `origin:LINE:COL: field `routes[2].service`: unknown service "foo"`; the position
    /// is left out when there is none, the field part when no field applies.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.origin)?;
        if self.line > 0 {
            write!(f, ":{}:{}", self.line, self.column)?;
        }
        if !self.field.is_empty() {
            write!(f, ": field `{}`", self.field)?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for ConfigError {}

/// Every error found in a configuration, in file order; never empty when returned as `Err`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors {
    pub errors: Vec<ConfigError>,
}

impl ConfigErrors {
    /// A single error without position, e.g. the file could not be read.
    pub fn single(origin: &str, message: String) -> ConfigErrors {
        ConfigErrors {
            errors: vec![ConfigError {
                origin: origin.to_owned(),
                line: 0,
                column: 0,
                field: String::new(),
                message,
            }],
        }
    }

    pub fn len(&self) -> usize {
        self.errors.len()
    }

    pub fn is_empty(&self) -> bool {
        self.errors.is_empty()
    }

    pub fn iter(&self) -> std::slice::Iter<'_, ConfigError> {
        self.errors.iter()
    }
}

impl fmt::Display for ConfigErrors {
    /// One error per line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (position, error) in self.errors.iter().enumerate() {
            if position > 0 {
                writeln!(f)?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

impl<'a> IntoIterator for &'a ConfigErrors {
    type Item = &'a ConfigError;
    type IntoIter = std::slice::Iter<'a, ConfigError>;

    fn into_iter(self) -> Self::IntoIter {
        self.errors.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(line: usize, field: &str, message: &str) -> ConfigError {
        ConfigError {
            origin: "mesh.toml".to_owned(),
            line,
            column: 1,
            field: field.to_owned(),
            message: message.to_owned(),
        }
    }

    #[test]
    fn displays_one_error_per_line() {
        let errors = ConfigErrors {
            errors: vec![
                error(12, "routes[2].service", "unknown service \"foo\""),
                error(3, "", "expected `=`"),
            ],
        };
        assert_eq!(
            errors.to_string(),
            "mesh.toml:12:1: field `routes[2].service`: unknown service \"foo\"\n\
             mesh.toml:3:1: expected `=`"
        );
    }

    #[test]
    fn error_without_position_leaves_it_out() {
        let errors = ConfigErrors::single("mesh.toml", "cannot read file: gone".to_owned());
        assert_eq!(errors.to_string(), "mesh.toml: cannot read file: gone");
        assert_eq!(errors.len(), 1);
    }
}
