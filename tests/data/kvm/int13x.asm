; int13x.asm -- INT 13h services a boot program may call, with the answers
; SeaBIOS 1.16 gives under QEMU 7.2 (16 MiB disk, CHS 32/16/63): reset
; (AH=00, an SRST of the channel), status, geometry (08), size (15),
; extensions check (41, with and without BX=55AA), CHS read/write/verify
; (02/03/04) and their parameter checks, the stubs (05 09 0C 0D 11 14),
; ready (10), 16, extended read/write/verify/seek (42/43/44/47) at and past
; the end and with 256 sectors, 45/46/49/4E, EDD parameters (48: 1.x,
; 3.0 with its DPTE, a buffer too small),
; another drive, an unknown function. Per call, to debugcon: AX, BX, CX,
; DX, CF, the DAP count (extended calls) and the first dwords of the
; buffer's two first sectors. Sector 0 loads the table with INT 13h.
; tests/data/kvm/record.sh re-records it.
BITS 16
ORG 0x7C00
DBGC equ 0xE9
BUF  equ 0x9000
  cli
  cld
  xor ax, ax
  mov ds, ax
  mov es, ax
  mov ss, ax
  mov sp, 0x7000
  mov ax, 0x0200 + (data_end - table + 511) / 512
  mov cx, 0x0002
  xor dh, dh
  mov bx, 0x7E00
  int 0x13
  mov bp, table
next:
  cmp bp, table_end
  jae done
  xor eax, eax
  mov [BUF], eax
  mov [BUF + 512], eax
  mov ax, [bp]
  mov bx, [bp + 2]
  mov cx, [bp + 4]
  mov dx, [bp + 6]
  mov si, [bp + 8]
  push bp
  stc
  int 0x13
  pop bp
  pushf
  call put2             ; AX
  mov ax, bx
  call put2
  mov ax, cx
  call put2
  mov ax, dx
  call put2
  pop ax
  and al, 1
  out DBGC, al
  mov si, [bp + 8]
  test si, si
  jz .nodap
  mov ax, [si + 2]
  call put2
.nodap:
  mov ax, [BUF]
  call put2
  mov ax, [BUF + 512]
  call put2
  add bp, 10
  jmp next
done:
  ; EDD 1.x parameters as AH=48 left them
  mov si, edd
  mov cx, 26 + 66
.e:
  lodsb
  out DBGC, al
  loop .e
  ; the DPTE the EDD 2.x answer points at
  les si, [edd66 + 26]
  mov cx, 16
.d:
  es lodsb
  out DBGC, al
  loop .d
  mov al, 0x10
  out 0xF4, al
  cli
  hlt
put2:
  out DBGC, al
  mov al, ah
  out DBGC, al
  ret
%ifdef PART_HEADS
  ; one partition entry: QEMU takes the disk geometry from it
  times 0x1BE-($-$$) db 0
  db 0x80, 1, 1, 0, 0x83, PART_HEADS - 1, PART_SPT, 0xFF
  dd PART_SPT, 0x1000
%endif
  times 510-($-$$) db 0
  dw 0xAA55

%macro CALL13 5   ; ax, bx, cx, dx, si
  dw %1, %2, %3, %4, %5
%endmacro
table:
  CALL13 0x0000, 0, 0, 0x0080, 0        ; reset
  CALL13 0x0100, 0, 0, 0x0080, 0        ; status
  CALL13 0x0800, 0, 0, 0x0080, 0        ; geometry
  CALL13 0x1500, 0, 0, 0x0080, 0        ; size
  CALL13 0x4100, 0x55AA, 0, 0x0080, 0   ; extensions
  CALL13 0x4100, 0x0000, 0, 0x0080, 0   ; ... without the 55AA
  CALL13 0x0202, BUF, 0x0001, 0x0080, 0 ; CHS 0/0/1 x2
  CALL13 0x0200, BUF, 0x0001, 0x0080, 0 ; count 0
  CALL13 0x0281, BUF, 0x0001, 0x0080, 0 ; count 129
  CALL13 0x0280, BUF, 0x0001, 0x1080, 0  ; count 128 from head 16
  CALL13 0x0201, BUF, 0x0000, 0x0080, 0 ; sector 0
  CALL13 0x0201, BUF, 0x0040, 0x0080, 0 ; sector 64
  CALL13 0x0201, BUF, 0x0001, 0x1080, 0 ; head 16
  CALL13 0x0202, BUF, 0x1F3F, 0x0F80, 0 ; 31/15/63 x2: past the LCHS end
  CALL13 0x0201, BUF, 0x2001, 0x0080, 0 ; cylinder 32
  CALL13 0x0201, BUF, 0x0101, 0x0180, 0 ; 1/1/1 = LBA 1071
  CALL13 0x0301, 0x7C00, 0x0A01, 0x0080, 0 ; write 10/0/1 = LBA 10080
  CALL13 0x0201, BUF, 0x0A01, 0x0080, 0 ; read it back
  CALL13 0x0403, BUF, 0x0001, 0x0080, 0 ; verify
  CALL13 0x0405, BUF, 0x2001, 0x0080, 0 ; verify, cylinder 32
  CALL13 0x0501, BUF, 0x0000, 0x0080, 0 ; format
  CALL13 0x0900, 0, 0, 0x0080, 0
  CALL13 0x0C00, 0, 0x0100, 0x0080, 0
  CALL13 0x0D00, 0, 0, 0x0080, 0
  CALL13 0x1000, 0, 0, 0x0080, 0        ; ready
  CALL13 0x1100, 0, 0, 0x0080, 0
  CALL13 0x1400, 0, 0, 0x0080, 0
  CALL13 0x1600, 0, 0, 0x0080, 0
  CALL13 0x0100, 0, 0, 0x0080, 0        ; status after 16
  CALL13 0x4200, 0, 0, 0x0080, dap1     ; LBA 0x20 x2
  CALL13 0x4200, 0, 0, 0x0080, dap0     ; count 0
  CALL13 0x4200, 0, 0, 0x0080, dapend   ; LBA 0x8000
  CALL13 0x4200, 0, 0, 0x0080, daplast  ; LBA 0x7FFF x2
  CALL13 0x0100, 0, 0, 0x0080, 0        ; status after it
  CALL13 0x4200, 0, 0, 0x0080, dap256   ; 256 sectors
  CALL13 0x4300, 0, 0, 0x0080, dapw     ; write LBA 0x3000 x1
  CALL13 0x4200, 0, 0, 0x0080, dapr     ; read it back
  CALL13 0x4400, 0, 0, 0x0080, dap1     ; verify
  CALL13 0x4400, 0, 0, 0x0080, dapend   ; verify past the end
  CALL13 0x4700, 0, 0, 0x0080, dap1     ; seek
  CALL13 0x4500, 0, 0, 0x0080, 0
  CALL13 0x4600, 0, 0, 0x0080, 0
  CALL13 0x4900, 0, 0, 0x0080, 0
  CALL13 0x4E01, 0, 0, 0x0080, 0
  CALL13 0x4E02, 0, 0, 0x0080, 0
  CALL13 0x4800, 0, 0, 0x0080, edd      ; EDD, 26-byte buffer
  CALL13 0x4800, 0, 0, 0x0080, edd66    ; EDD 3.0, 66 bytes
  CALL13 0x4800, 0, 0, 0x0080, edd25    ; too small
  CALL13 0x0201, BUF, 0x0001, 0x0081, 0 ; drive 0x81: none
  CALL13 0x0800, 0, 0, 0x0081, 0
  CALL13 0x5000, 0, 0, 0x0080, 0        ; unknown function
  CALL13 0x0100, 0, 0, 0x0080, 0
table_end:
align 4
%macro DAP 4   ; count, offset, segment, lba
  db 16, 0
  dw %1, %2, %3
  dq %4
%endmacro
dap1:   DAP 2, BUF, 0, 0x20
dap0:   DAP 0, BUF, 0, 0x20
dapend: DAP 1, BUF, 0, 0x8000
daplast: DAP 2, BUF, 0, 0x7FFF
dap256: DAP 256, 0, 0x1000, 0x100
dapw:   DAP 1, 0x7C00, 0, 0x3000
dapr:   DAP 1, BUF, 0, 0x3000
edd:    dw 26
        times 24 db 0xEE
edd66:  dw 66
        times 64 db 0xEE
edd25:  dw 25
        times 24 db 0xEE
data_end:
  align 512, db 0
