//! Serial console: `println!` onto the board's UART.

use core::fmt::{self, Write};

use crate::board;

struct Console;

impl Write for Console {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        board::console_write(s.as_bytes());
        Ok(())
    }
}

/// Prints formatted text on the console.
pub fn print(args: fmt::Arguments<'_>) {
    // Console writes cannot fail.
    let _ = Console.write_fmt(args);
}

/// `println!` for the firmware.
#[macro_export]
macro_rules! println {
    () => { $crate::console::print(format_args!("\n")) };
    ($($arg:tt)*) => {{
        $crate::console::print(format_args!($($arg)*));
        $crate::console::print(format_args!("\n"));
    }};
}
