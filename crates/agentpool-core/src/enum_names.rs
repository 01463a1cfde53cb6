//! [`enum_names!`](macro@crate::enum_names): the one fixed name of each variant of a fieldless enum —
//! the form it takes in storage columns, URLs, CLI arguments and messages — with `ALL`,
//! `as_str`, `Display` and `FromStr` written once instead of by hand for every such enum.

/// Gives a fieldless enum one fixed name per variant: `ALL` (every variant, in the order
/// listed), `expected` (the names, for messages), `as_str`, `Display` (the name) and `FromStr`
/// (the name back). Anything else is `Err($err(input))`: the macro declares `$err`, a tuple
/// struct holding the input, whose message names what it is and the names accepted.
///
/// The serde form is declared on the enum itself (`rename_all`) and must spell the same names;
/// the crate's tests check that it does for each enum here.
///
/// ```
/// #[derive(Debug, Clone, Copy, PartialEq)]
/// enum Colour { Red, Dark }
/// agentpool_core::enum_names!(Colour, UnknownColour("colour") { Red => "red", Dark => "dark" });
/// assert_eq!(Colour::ALL, [Colour::Red, Colour::Dark]);
/// assert_eq!("dark".parse::<Colour>().unwrap(), Colour::Dark);
/// assert_eq!(Colour::Red.to_string(), "red");
/// assert_eq!(
///     "blue".parse::<Colour>().unwrap_err().to_string(),
///     "unknown colour \"blue\": use red or dark"
/// );
/// ```
#[macro_export]
macro_rules! enum_names {
    ($ty:ident, $err:ident($what:literal) { $($variant:ident => $name:literal),+ $(,)? }) => {
        #[doc = concat!("A name that is no ", $what, ".")]
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub struct $err(pub String);

        impl ::std::fmt::Display for $err {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                write!(f, "unknown {} {:?}: use {}", $what, self.0, $ty::expected())
            }
        }

        impl ::std::error::Error for $err {}

        impl $ty {
            /// Every variant, in declaration order.
            pub const ALL: [$ty; [$($name),+].len()] = [$($ty::$variant),+];

            /// Every name, for a message that says what would have been accepted:
            /// "queued, running, succeeded, failed or canceled".
            pub fn expected() -> String {
                let names = [$($name),+];
                match names.split_last() {
                    Some((last, [])) => last.to_string(),
                    Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
                    None => String::new(),
                }
            }

            /// The variant's fixed name.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($ty::$variant => $name,)+
                }
            }
        }

        impl ::std::fmt::Display for $ty {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl ::std::str::FromStr for $ty {
            type Err = $err;
            fn from_str(s: &str) -> ::std::result::Result<Self, Self::Err> {
                Self::ALL
                    .into_iter()
                    .find(|x| x.as_str() == s)
                    .ok_or_else(|| $err(s.to_string()))
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use crate::{AttemptOutcome, ErrorClass, EventKind, TaskState, WorkerStatus};

    /// Each name parses back to its variant and is exactly the variant's serde form.
    fn names_match_serde<T>(all: &[T])
    where
        T: Copy + PartialEq + std::fmt::Debug + std::fmt::Display + std::str::FromStr + serde::Serialize,
        T::Err: std::fmt::Debug,
    {
        for &x in all {
            let name = x.to_string();
            assert_eq!(name.parse::<T>().ok(), Some(x), "{name}");
            assert_eq!(
                serde_json::to_value(x).ok(),
                Some(serde_json::Value::String(name))
            );
        }
        assert!("no such name".parse::<T>().is_err());
    }

    #[test]
    fn every_name_round_trips_and_matches_the_serde_form() {
        names_match_serde(&TaskState::ALL);
        names_match_serde(&AttemptOutcome::ALL);
        names_match_serde(&ErrorClass::ALL);
        names_match_serde(&EventKind::ALL);
        names_match_serde(&WorkerStatus::ALL);
        names_match_serde(&crate::notification::DeliveryState::ALL);
        names_match_serde(&crate::notification::Format::ALL);
        names_match_serde(&crate::FileStatus::ALL);
    }
}
