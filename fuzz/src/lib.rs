//! What the fuzz targets share: reading a target's settings from the front
//! of the fuzz input, so that libFuzzer mutates them along with the bytes
//! under test and every run is reproduced by its input file alone.

/// Reads settings off the front of a fuzz input; past its end every read
/// gives zero, the default.
pub struct Header<'a> {
    rest: &'a [u8],
}

impl<'a> Header<'a> {
    /// Starts reading `input`.
    pub fn new(input: &'a [u8]) -> Self {
        Header { rest: input }
    }

    /// The next byte, or 0 once the input is used up.
    pub fn byte(&mut self) -> u8 {
        match self.rest.split_first() {
            Some((&b, rest)) => {
                self.rest = rest;
                b
            }
            None => 0,
        }
    }

    /// A list of up to 15 values: a count byte (its low four bits), then
    /// that many bytes.
    pub fn cycle(&mut self) -> Cycle<'a> {
        let n = usize::from(self.byte() & 15).min(self.rest.len());
        let (values, rest) = self.rest.split_at(n);
        self.rest = rest;
        Cycle { values, next: 0 }
    }

    /// What the settings leave: the bytes under test.
    pub fn rest(self) -> &'a [u8] {
        self.rest
    }
}

/// Values taken in turn, starting over at the end; none means "all zero".
#[derive(Clone)]
pub struct Cycle<'a> {
    values: &'a [u8],
    next: usize,
}

impl Cycle<'_> {
    /// A cycle with no values.
    pub fn empty() -> Self {
        Cycle {
            values: &[],
            next: 0,
        }
    }

    /// Whether the cycle has no values.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// The next value (0 when there are none).
    pub fn next_value(&mut self) -> u8 {
        if self.values.is_empty() {
            return 0;
        }
        let v = self.values[self.next];
        self.next = (self.next + 1) % self.values.len();
        v
    }

    /// The length of the next piece of a split input: 1 to 256 octets, or
    /// everything (`usize::MAX`) when the cycle is empty.
    pub fn next_len(&mut self) -> usize {
        if self.values.is_empty() {
            return usize::MAX;
        }
        usize::from(self.next_value()) + 1
    }
}
